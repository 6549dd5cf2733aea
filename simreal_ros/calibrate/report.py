"""The calibration report a person reads at a glance: ``report.png`` + ``report.json``.

The figure: measured vs simulated joint positions and efforts on held-out data with the prior
(nominal) and the calibrated model, the RMSE per joint before/after, and the friction, damping
and payload estimates with their intervals next to the prior and the state estimator's online
belief from the same sessions. A contact fit (push sessions) adds ``report_contact.png``: the
tracked vs replayed puck paths of the longest pushes and the contact estimates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simreal_ros.calibrate.fit import Calibration

if TYPE_CHECKING:
    from simreal_ros.calibrate.contact import ContactCalibration


def write_report(cal: Calibration, out: Path, doc: dict[str, Any]) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = cal.joint_names
    n = len(names)
    short = [j.replace("panda_", "") for j in names]
    est = cal.estimates
    report = {"parameters": doc["calibration"]["parameters"], "replay": doc["calibration"]["replay"],
              "fit": doc["calibration"]["fit"], "belief": cal.belief, "warnings": cal.warnings,
              "ratio_position_rmse": dict(zip(names, map(float, cal.before.position_rmse /
                                                         np.maximum(cal.after.position_rmse, 1e-12))))}
    paths = {"report_json": out / "report.json", "report_png": out / "report.png"}
    paths["report_json"].write_text(json.dumps(report, indent=1, default=float))

    fig = plt.figure(figsize=(18, 13))
    gs = fig.add_gridspec(4, n, height_ratios=[1, 1, 1.1, 1.1], hspace=0.45, wspace=0.35)
    b, a = cal.before, cal.after
    k = 0  # first held-out chunk
    t = b.times[k] - b.times[k][0]
    for i, j in enumerate(names):
        for row, suffix, unit, scale in ((0, "_pos", "mrad", 1e3), (1, "_torque", "N m", 1.0)):
            if f"{j}{suffix}" not in b.sensor_names:
                continue
            c = b.sensor_names.index(f"{j}{suffix}")
            ax = fig.add_subplot(gs[row, i])
            ref = b.measured[k][:, c] * scale
            off = ref.mean() if suffix == "_pos" else 0.0
            ax.plot(t, ref - off, "k", lw=1.2, label="measured")
            ax.plot(t, b.predicted[k][:, c] * scale - off, "r", lw=0.8, label="nominal")
            ax.plot(t, a.predicted[k][:, c] * scale - off, "b--", lw=0.8, label="calibrated")
            ax.set_title(f"{short[i]} {'position' if row == 0 else 'effort'}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_ylabel(f"{unit}" + (" (- mean)" if row == 0 else ""), fontsize=8)
                if row == 0:
                    ax.legend(fontsize=7)
    ax = fig.add_subplot(gs[2, : n // 2])
    x = np.arange(n)
    ax.bar(x - 0.2, b.position_rmse * 1e3, 0.4, color="r", label="nominal")
    ax.bar(x + 0.2, a.position_rmse * 1e3, 0.4, color="b", label="calibrated")
    ax.set_yscale("log")
    ax.set_xticks(x, short, fontsize=8)
    ax.set_ylabel("held-out position RMSE (mrad)")
    ax.legend(fontsize=8)
    ax.set_title("replay error per joint, held-out data", fontsize=10)
    ax = fig.add_subplot(gs[2, n // 2:])
    ax.axis("off")
    lines = ["payload mass: " + _txt(est["payload_mass"]), "action latency: " + _txt(est["action_latency"], 1e3, "ms"),
             "observation latency: " + _txt(est["observation_latency"], 1e3, "ms")]
    for b in cal.belief:
        pm = b.get("payload_mass")
        if pm:
            lines.append(f"online belief payload ({b['session']}): {pm['value']:.3g} +- {pm['std']:.2g} kg")
    lines += [f"rollouts {cal.stats.get('rollouts')}, {cal.stats.get('iterations')} iterations, "
              f"{cal.stats.get('wall_time_s', 0):.0f} s"]
    lines += [f"not identified: {len([e for e in est.values() if not e.identified])} of {len(est)}"]
    lines += [w[:110] for w in cal.warnings[:8]]
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
    for col, (kind, unit, belief_key) in enumerate((("friction", "N m", "coulomb_friction"),
                                                    ("damping", "N m s/rad", "viscous_friction"),
                                                    ("armature", "kg m^2", "armature"))):
        ax = fig.add_subplot(gs[3, col * n // 3:(col + 1) * n // 3])
        vals = [est[f"{kind}/{j}"] for j in names]
        prior = [e.prior for e in vals]
        ax.plot(x, prior, "s", color="gray", label="prior (nominal)")
        ok = [i for i, e in enumerate(vals) if e.identified]
        ax.errorbar(ok, [vals[i].value for i in ok], yerr=[2 * vals[i].std for i in ok], fmt="o", color="b",
                    capsize=3, label="batch fit +- 2 std")
        bad = [i for i, e in enumerate(vals) if not e.identified]
        if bad:
            ax.plot(bad, [0] * len(bad), "x", color="m", label="not identified")
        if cal.belief:
            bel = cal.belief[-1][belief_key]
            ax.errorbar(x + 0.15, [bel[j]["value"] for j in names], yerr=[2 * bel[j]["std"] for j in names],
                        fmt="^", color="g", capsize=2, label="online belief +- 2 std")
        ax.set_xticks(x, short, fontsize=7)
        ax.set_title(f"{kind} ({unit})", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("simreal calibrate: " + ", ".join(s.name for s in cal.sources), fontsize=12)
    fig.savefig(paths["report_png"], dpi=80)
    plt.close(fig)
    return paths


def _txt(e, scale: float = 1.0, unit: str | None = None) -> str:
    unit = unit or e.unit
    if not e.identified:
        return f"not identified ({e.reason[:60]})"
    return f"{e.value * scale:.4g} +- {e.std * scale:.2g} {unit} (prior {e.prior * scale:.3g})"


def write_contact_report(cc: ContactCalibration, out: Path) -> dict[str, Path]:
    """``report_contact.png``: tracked vs replayed puck paths (prior friction, calibrated) for
    the longest pushes, and the estimates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(out) / "report_contact.png"
    shown = sorted(cc.paths, key=lambda p: -len(p["tracked"]))[:3]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(4.2 * (len(shown) + 1), 4.2))
    axes = np.atleast_1d(axes)
    for ax, p in zip(axes, shown):
        tr, pr, ca, tl = (np.asarray(p[k]) for k in ("tracked", "prior", "calibrated", "tool"))
        ax.plot(tl[:, 0], tl[:, 1], color="0.7", lw=1, label="tool (measured arm)")
        ax.plot(tr[:, 0], tr[:, 1], "k.", ms=3, label="tracked puck")
        ax.plot(pr[:, 0], pr[:, 1], "r-", lw=1, label="replay, prior")
        ax.plot(ca[:, 0], ca[:, 1], "b--", lw=1.2, label="replay, calibrated")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"{p['log']} t={p['t0']:.1f} s", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("x (m)", fontsize=8)
    if shown:
        axes[0].legend(fontsize=7)
    ax = axes[-1]
    ax.axis("off")
    lines = [f"pushes {len(cc.segments)}, contact {cc.stats.get('contact_s', 0):.1f} s, "
             f"free sliding {cc.stats.get('free_slide_s', 0):.1f} s",
             f"puck path RMSE: prior {cc.rmse_before * 1e3:.1f} mm -> calibrated {cc.rmse_after * 1e3:.1f} mm"]
    for e in cc.estimates.values():
        if e.identified:
            lines.append(f"{e.name}: {e.value:.4g} +- {e.std:.2g} {e.unit} (prior {e.prior:.3g})")
        else:
            lines.append(f"{e.name}: not identified")
            lines += ["  " + e.reason[i:i + 52] for i in range(0, min(len(e.reason), 208), 52)]
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
    fig.suptitle("simreal calibrate: contact (tracked vs replayed puck)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {"report_contact_png": path}
