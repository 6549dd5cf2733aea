"""What a calibration writes: ``calibration.yaml`` (with its randomization profile) and the report.

``calibration.yaml``::

    calibration:            # provenance, settings, fit statistics, held-out replay, warnings
      package_version, created_utc, robot, joints, sources: [{name, duration_s, sha256, controller}],
      widening: 3.0         # profile ranges = estimate +- widening x std
      parameters: {name: {value, std, unit, prior, identified, reason}}   # value/std null if not identified
      link_inertials: {link: {mass, com, inertia}}                         # the fitted model's
      replay: {position_rmse_rad: {before, after}, effort_rmse_nm: {...}}
      fit: {...}, warnings: [...]
      contact: {...}        # push sessions: table_friction, puck_mass (simreal_ros/calibrate/contact.py)
    randomization:          # a profile: simreal sim|train|evaluate --randomization DIR/calibration.yaml
      dynamics: {...}
      sensor: {...}
      contact: {...}        # with a contact fit: friction and mass scales centred on its estimates

A knob the data did not identify takes the ``default`` profile's range (the nominal model's
uncertainty); noise and drop rates are not calibrated and come from the ``default`` profile too.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from simreal_ros.calibrate.fit import Calibration
from simreal_ros.sim.push_task import load_push_task
from simreal_ros.sim.randomize import load_ranges

if TYPE_CHECKING:
    from simreal_ros.calibrate.contact import ContactCalibration


def _range(v: float, s: float, w: float, low: float | None = 0.0) -> list[float]:
    lo, hi = v - w * s, v + w * s
    if low is not None:
        lo, hi = max(lo, low), max(hi, low)
    return [float(lo), float(hi)]


def profile(cal: Calibration) -> dict[str, Any]:
    """The randomization profile centred on ``cal``'s estimates (see the module docstring)."""
    w = cal.config.widening
    default = load_ranges(profile="default")
    dd, ds = default.dynamics, default.sensor
    est = cal.estimates
    dyn: dict[str, Any] = {}
    for kind, key, fallback in (("friction", "joint_friction", dd.joint_friction),
                                ("damping", "joint_damping", dd.joint_damping),
                                ("armature", "joint_armature", dd.joint_armature),
                                ("stiffness_scale", "stiffness_scale", dd.stiffness_scale),
                                ("damping_scale", "damping_scale", dd.damping_scale)):
        rows = []
        for j in cal.joint_names:
            e = est[f"{kind}/{j}"]
            rows.append(_range(e.value, e.std, w) if e.identified else [float(x) for x in fallback])
        dyn[key] = rows
    e = est["payload_mass"]
    dyn["payload_mass"] = _range(e.value, e.std, w) if e.identified else list(dd.payload_mass)
    e = est["payload_com"]
    dyn["payload_com"] = ([_range(v, s, w, None) for v, s in zip(e.value, e.std)] if e.identified
                          else [[0.0, 0.0]] * 3)
    dyn["link_mass_scale"] = [1.0, 1.0]
    dyn["com_offset"] = [0.0, 0.0]
    dyn["link_inertia"] = {link: {"mass": m, "com": c, "inertia": i} for link, (m, c, i) in cal.link_inertials.items()}
    sen: dict[str, Any] = {}
    rows = []
    for j in cal.joint_names:
        e = est[f"bias/{j}"]
        rows.append(_range(e.value, e.std, w, None) if e.identified else [-ds.position_bias[1], ds.position_bias[1]])
    sen["position_bias"] = rows
    for key in ("action_latency", "observation_latency"):
        e = est[key]
        sen[key] = _range(e.value, e.std, w) if e.identified else list(getattr(ds, key))
    for key in ("position_noise_std", "velocity_noise_std", "effort_noise_std", "drop_probability"):
        sen[key] = [float(x) for x in getattr(ds, key)]
    return {"dynamics": dyn, "sensor": sen}


def _rmse(cal: Calibration) -> dict[str, Any]:
    names = cal.joint_names
    out: dict[str, Any] = {"position_rmse_rad": {
        "before": dict(zip(names, map(float, cal.before.position_rmse))),
        "after": dict(zip(names, map(float, cal.after.position_rmse)))}}
    if cal.before.effort_rmse is not None:
        out["effort_rmse_nm"] = {"before": dict(zip(names, map(float, cal.before.effort_rmse))),
                                 "after": dict(zip(names, map(float, cal.after.effort_rmse)))}
    return out


# ---------------------------------------------------------------------------------- contact
def _as_plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_as_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_plain(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def contact_document(cc: ContactCalibration) -> dict[str, Any]:
    """calibration.yaml's ``calibration.contact`` section."""
    return {
        "sources": _as_plain(cc.sources),
        "parameters": {k: {**e.as_dict(), "provenance": [s["name"] for s in cc.sources]}
                       for k, e in cc.estimates.items()},
        "pushes": len(cc.segments),
        "contact_s": cc.stats.get("contact_s"), "free_slide_s": cc.stats.get("free_slide_s"),
        "replay": {"puck_path_rmse_m": {"before": cc.rmse_before, "after": cc.rmse_after},
                   "note": "tracked vs replayed puck position over every push window; before: the task's "
                           "friction, after: the estimate (the puck path does not depend on the mass)"},
        "fit": _as_plain({k: v for k, v in cc.stats.items() if k != "friction_scan"}),
        "config": _as_plain({k: getattr(cc.config, k) for k in cc.config.__dataclass_fields__}),
        "warnings": list(cc.warnings),
    }


def contact_profile(cc: ContactCalibration | None, widening: float | None = None) -> dict[str, Any]:
    """The randomization profile's ``contact`` section: the ``default`` profile's, with the
    friction and mass scales centred on the estimates (estimate +- widening x std, over the
    task's values) where they were identified."""
    out = _as_plain(asdict(load_ranges(profile="default").contact))
    if cc is None:
        return out
    w = cc.config.widening if widening is None else widening
    task = cc.task or load_push_task()
    for name, key, nominal in (("table_friction", "table_friction_scale", task.table_friction),
                               ("puck_mass", "puck_mass_scale", task.puck_mass)):
        e = cc.estimates.get(name)
        if e is not None and e.identified:
            lo, hi = max(e.value - w * e.std, 1e-3 * e.value), e.value + w * e.std
            out[key] = [float(lo / nominal), float(hi / nominal)]
    for name in ("tracker_latency", "tracker_noise_std"):  # absolute ranges
        e = cc.estimates.get(name)
        if e is not None and e.identified:
            out[name] = [float(max(e.value - w * e.std, 0.0)), float(e.value + w * e.std)]
    return out


def calibration_document(cal: Calibration | None, contact: Any = None) -> dict[str, Any]:
    """``calibration.yaml`` as plain data; ``contact`` (a
    :class:`~simreal_ros.calibrate.contact.ContactCalibration`) adds ``calibration.contact`` and
    centres the profile's ``contact`` ranges on its estimates. Without ``cal`` (a contact-only
    fit) the profile's arm sections are the ``default`` profile's (the arm was not calibrated)."""
    if cal is None:
        return _contact_only_document(contact)
    doc = _arm_document(cal)
    if contact is not None:
        doc["calibration"]["contact"] = contact_document(contact)
        doc["randomization"]["contact"] = contact_profile(contact)
    return doc


def _contact_only_document(contact: Any) -> dict[str, Any]:
    from simreal_ros import __version__

    default = load_ranges(profile="default")
    return {"calibration": {"package_version": __version__,
                            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                            "note": "contact only: the arm was not calibrated (its profile sections are the default "
                                    "profile's)",
                            "contact": contact_document(contact), "warnings": list(contact.warnings)},
            "randomization": {"dynamics": {k: v for k, v in _as_plain(asdict(default.dynamics)).items()
                                           if k != "link_inertia" or v},
                              "sensor": _as_plain(asdict(default.sensor)), "contact": contact_profile(contact)}}


def _arm_document(cal: Calibration) -> dict[str, Any]:
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cal.config).items()}
    return {
        "calibration": {
            "package_version": cal.package_version,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "joints": list(cal.joint_names),
            "sources": [{"name": s.name, "duration_s": float(s.duration_s), "sha256": s.sha256,
                         "controller": s.controller} for s in cal.sources],
            "widening": float(cal.config.widening),
            "widening_note": "randomization ranges are estimate +- widening x std (clipped to physical values); "
                             "a knob that was not identified keeps the default profile's range",
            "parameters": {k: e.as_dict() for k, e in cal.estimates.items()},
            "link_inertials": {link: {"mass": m, "com": c, "inertia": i, "units": "kg; m; kg m^2 about the com "
                                      "(ixx iyy izz ixy ixz iyz)"} for link, (m, c, i) in cal.link_inertials.items()},
            "replay": _rmse(cal),
            "fit": {**{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in cal.stats.items()},
                    "config": cfg},
            "belief": cal.belief,
            "warnings": list(cal.warnings),
        },
        "randomization": profile(cal),
    }


def write_outputs(cal: Calibration | None, out_dir: str | Path, report: bool = True,
                  contact: Any = None) -> dict[str, Path]:
    """Write ``calibration.yaml``, ``report.json`` and ``report.png`` into ``out_dir``; return the
    paths. ``contact``: the push task's contact fit (also ``report_contact.png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = calibration_document(cal, contact)
    paths = {"calibration": out / "calibration.yaml"}
    paths["calibration"].write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
    if report and cal is not None:
        from simreal_ros.calibrate.report import write_report
        paths.update(write_report(cal, out, doc))
    if report and contact is not None:
        from simreal_ros.calibrate.report import write_contact_report
        paths.update(write_contact_report(contact, out))
    return paths


def json_summary(cal: Calibration) -> str:
    """One line of JSON: the replay RMSE before/after and the fit statistics."""
    return json.dumps({**_rmse(cal), **{k: v for k, v in cal.stats.items()}})
