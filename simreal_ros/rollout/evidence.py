"""Evidence for a promotion, read and checked: OPE results, shadow sessions, blend sessions.

Three kinds, told apart by content (:func:`read_evidence`):

``ope``  -- a JSON file (what ``simreal ope`` writes; only the keys of :data:`OPE_SCHEMA` are
read, others are ignored)::

    {"policy": {"fqe": {"mean": 1.2, "ci_low": 0.9, "ci_high": 1.5}, "policy_hash": "sha256:..."},
     "parent": {"fqe": {"mean": ..., "ci_low": ..., "ci_high": ...}},        # optional
     "replay": {"predicted_violations": 0, "intervention_rate": 0.01, "ood_rate": 0.0}}

  ``policy.policy_hash`` is optional; when given it must be the promoted bundle's
  (:func:`simreal_ros.rollout.stage.policy_hash`). Rates are fractions of replayed cycles.

``shadow`` -- a recorded bag (directory) of a session in shield mode ``shadow``: the policy's
would-be commands (``/simreal/shield/shadow_command``), the shield's would-be interventions
(``/simreal/shield/shadow_interventions``, one message per cycle with any) and the baseline's
commands (``/simreal/baseline/command``); the policy node's ``/diagnostics`` name the policy
(``policy_hash``), which must be the promoted bundle's.

``session`` -- the ``summary.json`` of a ``simreal sim`` run (``shield_mode``, ``success_rate``,
``goals_attempted``, ``limit_violations``, ``policy_hash``, ``error``).

Every refusal is one :class:`EvidenceError` line naming the file and the key. No ROS imports.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from simreal_ros import topics
from simreal_ros.policy.manifest_yaml import short_repr

SHADOW_TOPIC = topics.SHADOW_COMMAND
SHADOW_IV_TOPIC = topics.SHADOW_INTERVENTIONS
BASELINE_TOPIC = topics.BASELINE_COMMAND
DIAGNOSTICS_TOPIC = topics.DIAGNOSTICS
POLICY_STATUS_PREFIX = "policy_executor:"
#: the OPE keys read (section -> key -> kind); "?" marks an optional section/key
OPE_SCHEMA: dict[str, dict[str, str]] = {
    "policy": {"fqe.mean": "number", "fqe.ci_low": "number", "fqe.ci_high": "number", "policy_hash?": "string"},
    "parent?": {"fqe.mean": "number", "fqe.ci_low": "number", "fqe.ci_high": "number",
                "replay.intervention_rate?": "fraction", "replay.ood_rate?": "fraction"},
    "replay": {"predicted_violations": "count", "intervention_rate": "fraction", "ood_rate": "fraction"},
}
MAX_JSON_BYTES = 16 * 1024 * 1024
KINDS = ("ope", "shadow", "session")


class EvidenceError(ValueError):
    """An evidence file that cannot be used (the message names the file and what is wrong)."""


@dataclass
class Evidence:
    """One evidence file, read: its kind, content hash and the figures the criteria use."""

    kind: str
    path: Path
    sha256: str
    figures: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of it."""
        return {"kind": self.kind, "path": str(self.path), "sha256": self.sha256, "figures": self.figures,
                **({"notes": list(self.notes)} if self.notes else {})}


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return ...
        cur = cur[part]
    return cur


def _check_value(where: str, key: str, value: Any, kind: str) -> Any:
    def bad(why: str) -> EvidenceError:
        return EvidenceError(f"{where}: key '{key}' = {short_repr(value)}: {why}")

    if kind == "string":
        if not isinstance(value, str):
            raise bad("expected a string")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad("expected a finite number")
    if kind == "count":
        if int(value) != value or value < 0:
            raise bad("expected a whole number >= 0")
        return int(value)
    if kind == "fraction" and not 0.0 <= value <= 1.0:
        raise bad("expected a fraction in [0, 1]")
    return float(value)


def validate_ope(data: Any, where: str = "OPE evidence") -> dict[str, Any]:
    """The figures of an OPE result checked against :data:`OPE_SCHEMA`: a flat dict with dotted
    keys (``policy.fqe.ci_low``, ``parent.fqe.ci_low`` or absent, ``replay.ood_rate``, ...)."""
    if not isinstance(data, Mapping):
        raise EvidenceError(f"{where}: expected a JSON object with {sorted(k.rstrip('?') for k in OPE_SCHEMA)}")
    out: dict[str, Any] = {}
    for section, keys in OPE_SCHEMA.items():
        name = section.rstrip("?")
        if name not in data:
            if section.endswith("?"):
                continue
            raise EvidenceError(f"{where}: key '{name}' is missing (schema: simreal_ros/rollout/evidence.py OPE_SCHEMA)")
        for key, kind in keys.items():
            k = key.rstrip("?")
            value = _get(data[name], k)
            if value is ...:
                if key.endswith("?"):
                    continue
                raise EvidenceError(f"{where}: key '{name}.{k}' is missing")
            out[f"{name}.{k}"] = _check_value(where, f"{name}.{k}", value, kind)
        lo, mean, hi = (out.get(f"{name}.fqe.{s}") for s in ("ci_low", "mean", "ci_high"))
        if lo is not None and not lo <= mean <= hi:
            raise EvidenceError(f"{where}: '{name}.fqe' needs ci_low <= mean <= ci_high, got {lo:g}, {mean:g}, {hi:g}")
    return out


def from_ope_report(report: Mapping[str, Any], where: str = "simreal ope report") -> dict[str, Any]:
    """A ``simreal ope`` report (``policies.policy``, ``policies.against``) in the OPE evidence form
    of :data:`OPE_SCHEMA`, so ``simreal promote --evidence`` takes what ``simreal ope --out`` wrote."""
    try:
        pols = report["policies"]

        def fqe(p: Mapping[str, Any]) -> dict[str, float]:
            lo, hi = p["fqe_value_ci95"]
            return {"mean": p["fqe_value_mean"], "ci_low": lo, "ci_high": hi}

        def rates(p: Mapping[str, Any]) -> dict[str, float]:
            r = p["replay"]
            return {"intervention_rate": float(r["shield_interventions_per_100_commands"]) / 100.0,
                    "ood_rate": float(r["ood_excursion_rate"])}

        pol = pols["policy"]
        data: dict[str, Any] = {
            "policy": {"fqe": fqe(pol), **({"policy_hash": pol["policy_hash"]} if "policy_hash" in pol else {})},
            "replay": {"predicted_violations": pol["replay"]["predicted_limit_violations"], **rates(pol)},
            "source": report.get("file")}
        if "against" in pols:
            data["parent"] = {"fqe": fqe(pols["against"]), "replay": rates(pols["against"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise EvidenceError(f"{where}: not a complete simreal ope report ({type(exc).__name__}: {exc})") from None
    return data


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise EvidenceError(f"{path}: {size} bytes; evidence JSON is at most {MAX_JSON_BYTES}")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvidenceError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None


def read_session_summary(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Figures of a ``simreal sim`` summary (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, kind in (("shield_mode", "string"), ("success_rate", "fraction"), ("goals_attempted", "count"),
                      ("limit_violations", "count")):
        if key not in data:
            raise EvidenceError(f"{where}: key '{key}' is missing (a simreal sim summary.json)")
        out[key] = _check_value(where, key, data[key], kind)
    out["policy_hash"] = data.get("policy_hash") if isinstance(data.get("policy_hash"), str) else ""
    out["error"] = data.get("error") or ""
    return out


def _pairs(shadow: list[tuple[int, Any]], baseline: list[tuple[int, Any]], max_lag_ns: int) -> np.ndarray:
    """|shadow - baseline| rows (max over joints) for each shadow command and the latest baseline
    command received before it within ``max_lag_ns``."""
    if not shadow or not baseline:
        return np.zeros(0)
    bt = np.array([t for t, _ in baseline], dtype=np.int64)
    out = []
    for t, msg in shadow:
        i = int(np.searchsorted(bt, t, side="right")) - 1
        if i < 0 or t - bt[i] > max_lag_ns:
            continue
        a, b = np.asarray(msg.data, dtype=float), np.asarray(baseline[i][1].data, dtype=float)
        if a.shape != b.shape or a.size == 0:
            continue
        out.append(float(np.max(np.abs(a - b))))
    return np.asarray(out)


def shadow_figures(bag: str | Path, max_lag: float = 0.1) -> tuple[dict[str, Any], list[str]]:
    """Divergence from the baseline and would-be intervention rate of a shadow session's bag.

    ``divergence_mean_rad``: mean over cycles of the largest joint difference between the
    policy's would-be (shield-filtered) command and the baseline's command (the latest one
    received at most ``max_lag`` s before it); ``intervention_rate``: cycles with a would-be
    intervention per would-be command. Raises :class:`EvidenceError` for a bag that is not a
    shadow session.
    """
    from simreal_ros.bag.check import BagReadError, check_bag
    from simreal_ros.bag.metadata import topic_counts
    from simreal_ros.bringup.report import read_bag

    bag = Path(bag)
    try:
        topics = topic_counts(check_bag(bag))
    except BagReadError as exc:
        raise EvidenceError(str(exc)) from None
    if not sum(n for _, n in topics.values()):
        raise EvidenceError(f"{bag}: empty bag (no messages on any of its {len(topics)} topics): not a shadow session")
    try:
        data = read_bag(bag, [SHADOW_TOPIC, SHADOW_IV_TOPIC, BASELINE_TOPIC, DIAGNOSTICS_TOPIC])
    except BagReadError as exc:
        raise EvidenceError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a damaged bag fails in many ways; name it
        raise EvidenceError(f"{bag}: does not read back ({type(exc).__name__}: {exc}); run: simreal bag recover "
                            f"{bag}") from None
    shadow = data.get(SHADOW_TOPIC, [])
    if not shadow:
        raise EvidenceError(f"{bag}: no {SHADOW_TOPIC} messages: not a session in shield mode shadow with the policy "
                            "proposing")
    baseline = data.get(BASELINE_TOPIC, [])
    if not baseline:
        raise EvidenceError(f"{bag}: no {BASELINE_TOPIC} messages: the baseline's commands are needed for the "
                            "divergence")
    hashes, names = set(), set()
    for _, msg in data.get(DIAGNOSTICS_TOPIC, []):
        for st in msg.status:
            if st.name.startswith(POLICY_STATUS_PREFIX):
                names.add(st.name[len(POLICY_STATUS_PREFIX):].strip())
                hashes.update(kv.value for kv in st.values if kv.key == "policy_hash")
    diff = _pairs(shadow, baseline, int(max_lag * 1e9))
    notes = []
    if len(diff) < len(shadow):
        notes.append(f"{len(shadow) - len(diff)} of {len(shadow)} shadow commands had no baseline command within "
                     f"{max_lag:g} s (left out of the divergence)")
    cycles_iv = len(data.get(SHADOW_IV_TOPIC, []))
    figures = {
        "shadow_commands": len(shadow),
        "paired_commands": int(len(diff)),
        "divergence_mean_rad": float(diff.mean()) if len(diff) else math.inf,
        "divergence_p95_rad": float(np.percentile(diff, 95)) if len(diff) else math.inf,
        "intervention_cycles": cycles_iv,
        "intervention_rate": cycles_iv / len(shadow),
        "policy_hashes": sorted(hashes),
        "policy_names": sorted(names),
        "duration_s": (shadow[-1][0] - shadow[0][0]) * 1e-9,
    }
    return figures, notes


def bag_hash(bag: Path) -> str:
    from simreal_ros.bag.check import check_bag
    from simreal_ros.calibrate.bag import content_hash

    return content_hash(bag, check_bag(bag))


def read_evidence(path: str | Path) -> Evidence:
    """Read one evidence file or bag (kind told by content); errors name the file."""
    path = Path(path)
    if not path.exists():
        raise EvidenceError(f"{path}: no such evidence file or bag")
    if path.is_dir():
        figures, notes = shadow_figures(path)
        return Evidence("shadow", path, bag_hash(path), figures, notes)
    data = _read_json(path)
    sha = file_hash(path)
    if isinstance(data, Mapping) and isinstance(data.get("policies"), Mapping) and "policy" in data["policies"]:
        data = from_ope_report(data, str(path))  # what simreal ope --out wrote
    if isinstance(data, Mapping) and "policy" in data and isinstance(data["policy"], Mapping) \
            and "fqe" in data["policy"]:
        return Evidence("ope", path, sha, validate_ope(data, str(path)))
    if isinstance(data, Mapping) and "shield_mode" in data and "success_rate" in data:
        return Evidence("session", path, sha, read_session_summary(data, str(path)))
    raise EvidenceError(f"{path}: neither an OPE result (simreal ope's report, or 'policy.fqe': OPE_SCHEMA), a "
                        "simreal sim summary.json ('shield_mode', 'success_rate') nor a bag directory")
