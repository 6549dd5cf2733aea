"""Promotion: move a bundle one rollout stage when its evidence meets the criteria.

=========  ===================  ==========================================================
to stage   evidence             criteria (thresholds: :class:`PromotionConfig`, config/promotion.yaml)
=========  ===================  ==========================================================
shadow     ``ope`` JSON         FQE lower bound not below the parent's (``ope_margin``; no
                                parent in the file: not compared, noted), predicted limit
                                violations <= ``max_predicted_violations`` (0), replay
                                intervention rate and OOD rate under their maxima, or under
                                the parent's on the same states (+ ``replay_parent_margin``)
                                where that is larger
blend      ``shadow`` bag       at least ``min_shadow_commands`` would-be commands of this
                                policy, divergence from the baseline <= ``max_shadow_divergence``,
                                would-be intervention rate <= ``max_shadow_intervention_rate``
active     ``session`` summary  a ``simreal sim``/blend session of this policy in shield mode
                                blend: >= ``min_blend_goals`` goals, success rate >=
                                ``min_blend_success``, limit violations <= ``max_blend_violations``,
                                no error
=========  ===================  ==========================================================

Evidence that names a policy (OPE ``policy.policy_hash``, the shadow bag's diagnostics, the
session's ``policy_hash``) must name the promoted one. A decision -- promoted, refused or forced
-- is appended to ``provenance.rollout.history`` with every criterion (value, threshold, pass)
and every evidence file's content hash (:func:`simreal_ros.rollout.stage.write_rollout`). No ROS.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from simreal_ros.rollout.evidence import Evidence, EvidenceError, read_evidence
from simreal_ros.rollout.stage import STAGES, RolloutState, read_stage, write_rollout
from simreal_ros.settings import SettingError, from_settings, setting, validate_fields

#: the evidence kind each target stage needs
NEEDS = {"shadow": "ope", "blend": "shadow", "active": "session"}


@dataclass(frozen=True)
class PromotionConfig:
    """Promotion thresholds (declared once; config/promotion.yaml shows the defaults)."""

    ope_margin: float = setting(0.0, "the FQE lower bound (ci_low) may be at most this much below the parent's",
                                low=0.0, high=1e6)
    max_predicted_violations: int = setting(0, "most predicted limit violations in the OPE replay", low=0,
                                            high=1000000)
    max_replay_intervention_rate: float = setting(0.1, "most shield interventions per replayed cycle (OPE replay)",
                                                  low=0.0, high=1.0)
    max_replay_ood_rate: float = setting(0.05, "most out-of-distribution cycles per replayed cycle (OPE replay)",
                                         low=0.0, high=1.0)
    # The replay runs on the logged states, which can themselves be off the training distribution
    # (a hidden table): the issue-13 loop's fine-tuned push policy scored 0.187 interventions and 0.070
    # OOD per cycle and was refused while its parent, on the same states, scored alike. With the
    # parent's replay in the evidence a rate passes up to the larger of its maximum and the parent's
    # plus a margin (that parent: 0.186 and 0.070; 0.01 is one cycle in a hundred).
    replay_parent_margin: float = setting(0.01, "with the parent's replay in the OPE evidence, the replay "
                                          "intervention and OOD rates may be up to the parent's plus this "
                                          "(or their maxima, whichever is larger)", low=0.0, high=1.0)
    min_shadow_commands: int = setting(100, "fewest would-be policy commands a shadow session must hold", low=1,
                                       high=100000000)
    # the measurements behind the shadow thresholds: config/promotion.yaml and README "Gated stages"
    max_shadow_divergence: float = setting(0.085, "most mean divergence (largest joint difference per cycle) of the "
                                           "policy's would-be command from the baseline's in the shadow session",
                                           unit="rad", low=0.0, high=10.0)
    max_shadow_intervention_rate: float = setting(0.5, "most would-be interventions per would-be command in the "
                                                  "shadow session", low=0.0, high=1.0)
    min_blend_goals: int = setting(5, "fewest goals a blend session must attempt", low=1, high=1000000)
    min_blend_success: float = setting(0.9, "least goal success rate of the blend session", low=0.0, high=1.0)
    max_blend_violations: int = setting(0, "most limit violations in the blend session's sent commands", low=0,
                                        high=1000000)

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> PromotionConfig:
        """The file's ``promotion:`` section (default: the shipped config/promotion.yaml)."""
        from simreal_ros.resources import resource

        path = Path(path) if path else resource("config", "promotion.yaml")
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
        section = data.get("promotion") if isinstance(data, dict) else None
        if not isinstance(section, dict):
            raise SettingError(f"{path}: needs a 'promotion:' mapping of settings")
        unknown = sorted(set(section) - set(asdict(cls())))
        if unknown:
            raise SettingError(f"{path}: unknown promotion setting(s) {unknown}")
        return from_settings(cls, section, str(path))


@dataclass
class Criterion:
    name: str
    value: Any
    threshold: Any
    passed: bool
    note: str = ""

    def record(self) -> dict[str, Any]:
        out = {"name": self.name, "value": self.value, "threshold": self.threshold, "passed": self.passed}
        if self.note:
            out["note"] = self.note
        return out

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"  [{mark}] {self.name}: {self.value} (threshold {self.threshold}){' -- ' + self.note if self.note else ''}"


def _bound(ev: Evidence, current_hash: str, hashes: Sequence[str]) -> Criterion:
    hashes = [h for h in hashes if h]
    if not hashes:
        return Criterion(f"{ev.kind} evidence is of this policy", "not stated", current_hash[:19] + "...", True,
                         f"{ev.path} does not name its policy")
    ok = all(h == current_hash for h in hashes)
    return Criterion(f"{ev.kind} evidence is of this policy", ", ".join(h[:19] + "..." for h in hashes),
                     current_hash[:19] + "...", ok, "" if ok else f"{ev.path} is evidence for another policy")


def _replay_rate(name: str, rate: float, most: float, parent: float | None, margin: float) -> Criterion:
    """A replay rate against its maximum, or against the parent's on the same states (plus ``margin``)
    when that is larger."""
    if parent is None or parent + margin <= most:
        return Criterion(name, round(rate, 6), f"<= {most:g}", rate <= most)
    ref = parent + margin
    return Criterion(name, round(rate, 6), f"<= {ref:g}", rate <= ref,
                     f"the parent's on the same logged states ({parent:g}{f' + {margin:g}' if margin else ''}) "
                     f"is above the maximum {most:g}")


def criteria(target: str, evidence: Sequence[Evidence], config: PromotionConfig, state: RolloutState) -> list[Criterion]:
    """The criteria of moving to ``target`` with ``evidence`` (all of the needed kind are judged)."""
    kind = NEEDS[target]
    mine = [e for e in evidence if e.kind == kind]
    if not mine:
        return [Criterion(f"{kind} evidence given", "none", "at least one", False,
                          f"promotion to '{target}' needs {kind} evidence")]
    out: list[Criterion] = []
    for ev in mine:
        f = ev.figures
        tag = f" ({ev.path.name})" if len(mine) > 1 else ""
        if kind == "ope":
            out.append(_bound(ev, state.policy_hash, [f.get("policy.policy_hash", "")]))
            lo = f["policy.fqe.ci_low"]
            if "parent.fqe.ci_low" in f:
                ref = f["parent.fqe.ci_low"] - config.ope_margin
                out.append(Criterion(f"FQE lower bound vs the parent's{tag}", round(lo, 6), f">= {ref:g}", lo >= ref))
            else:
                out.append(Criterion(f"FQE lower bound vs the parent's{tag}", round(lo, 6), "a parent", True,
                                     "no parent in the OPE result: not compared"))
            v = f["replay.predicted_violations"]
            out.append(Criterion(f"predicted limit violations{tag}", v, f"<= {config.max_predicted_violations}",
                                 v <= config.max_predicted_violations))
            for what, key, most in (("intervention", "intervention_rate", config.max_replay_intervention_rate),
                                    ("OOD", "ood_rate", config.max_replay_ood_rate)):
                out.append(_replay_rate(f"replay {what} rate{tag}", f[f"replay.{key}"], most,
                                        f.get(f"parent.replay.{key}"), config.replay_parent_margin))
        elif kind == "shadow":
            hashes = f.get("policy_hashes") or []
            if not hashes:
                out.append(Criterion(f"shadow session is of this policy{tag}", "no policy_hash in the bag's "
                                     "/diagnostics", state.policy_hash[:19] + "...", False,
                                     f"{ev.path}: the policy that ran cannot be told"))
            else:
                out.append(_bound(ev, state.policy_hash, hashes))
            n = f["shadow_commands"]
            out.append(Criterion(f"shadow commands{tag}", n, f">= {config.min_shadow_commands}",
                                 n >= config.min_shadow_commands))
            d = f["divergence_mean_rad"]
            out.append(Criterion(f"divergence from the baseline{tag}", f"{d:.4f} rad",
                                 f"<= {config.max_shadow_divergence:g} rad", d <= config.max_shadow_divergence))
            r = f["intervention_rate"]
            out.append(Criterion(f"would-be intervention rate{tag}", round(r, 6),
                                 f"<= {config.max_shadow_intervention_rate:g}", r <= config.max_shadow_intervention_rate))
        else:
            if f.get("policy_hash"):
                out.append(_bound(ev, state.policy_hash, [f["policy_hash"]]))
            else:
                out.append(Criterion(f"blend session is of this policy{tag}", "no policy_hash in the summary",
                                     state.policy_hash[:19] + "...", False, f"{ev.path}: the policy that ran cannot "
                                     "be told"))
            out.append(Criterion(f"session shield mode{tag}", f["shield_mode"], "blend", f["shield_mode"] == "blend"))
            out.append(Criterion(f"session ran without error{tag}", f["error"] or "none", "none", not f["error"]))
            n = f["goals_attempted"]
            out.append(Criterion(f"blend goals{tag}", n, f">= {config.min_blend_goals}", n >= config.min_blend_goals))
            s = f["success_rate"]
            out.append(Criterion(f"blend success rate{tag}", round(s, 4), f">= {config.min_blend_success:g}",
                                 s >= config.min_blend_success))
            v = f["limit_violations"]
            out.append(Criterion(f"blend limit violations{tag}", v, f"<= {config.max_blend_violations}",
                                 v <= config.max_blend_violations))
    return out


@dataclass
class Decision:
    bundle: Path
    from_stage: str
    to_stage: str
    decision: str  # promoted | refused | forced
    criteria: list[Criterion]
    evidence: list[Evidence]
    state: RolloutState

    @property
    def moved(self) -> bool:
        return self.decision in ("promoted", "forced")


class PromotionError(ValueError):
    """A promotion that cannot be judged: bad bundle, stage skipped, unreadable evidence."""


def promote(bundle: str | Path, target: str, evidence_paths: Sequence[str | Path], config: PromotionConfig | None = None,
            force: bool = False, command: str = "") -> Decision:
    """Judge and record moving ``bundle`` to ``target`` (see the module docstring).

    Raises :class:`PromotionError` (bundle, stage order, evidence) -- nothing is written then.
    """
    from simreal_ros.policy.bundle import BundleError
    from simreal_ros.rollout.stage import StageError

    config = config or PromotionConfig()
    if target not in STAGES[1:]:
        raise PromotionError(f"--to {target!r}; allowed: {list(STAGES[1:])}")
    try:
        state = read_stage(bundle)
    except (BundleError, StageError) as exc:
        raise PromotionError(str(exc)) from None
    current = state.stage
    if STAGES.index(target) != STAGES.index(current) + 1:
        nxt = STAGES[STAGES.index(current) + 1] if current != STAGES[-1] else None
        extra = f" ({state.note})" if state.note else ""
        raise PromotionError(f"bundle '{state.name}' is at stage '{current}'{extra}; a promotion moves one stage: "
                             + (f"--to {nxt}" if nxt else "it is already at the last stage"))
    if not evidence_paths:
        raise PromotionError("no --evidence given")
    try:
        evidence = [read_evidence(p) for p in evidence_paths]
    except EvidenceError as exc:
        raise PromotionError(str(exc)) from None
    crit = criteria(target, evidence, config, state)
    ok = all(c.passed for c in crit)
    decision = "promoted" if ok else "forced" if force else "refused"
    record = {
        "from": current, "to": target, "decision": decision,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "policy_hash": state.policy_hash,
        "criteria": [c.record() for c in crit],
        "evidence": [e.record() for e in evidence],
        "thresholds": asdict(config),
        **({"command": command} if command else {}),
    }
    new_stage = target if decision in ("promoted", "forced") else current
    try:
        new_state = write_rollout(state.directory, new_stage, _plain(record))
    except (BundleError, StageError, OSError) as exc:
        raise PromotionError(f"{state.directory}: the decision could not be written: {exc}") from None
    return Decision(state.directory, current, target, decision, crit, evidence, new_state)


def _plain(x: Any) -> Any:
    import math

    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if hasattr(x, "item"):
        return x.item()
    return x
