"""A bundle's rollout stage, stored in its manifest without touching what the policy does.

Stages, in order: ``none`` -> ``shadow`` -> ``blend`` -> ``active``. A bundle moves one stage
at a time (``simreal promote``, :mod:`simreal_ros.rollout.promote`); a shield mode needs the
stage of the same name or a later one (``hold`` needs none).

Where the stage lives: ``provenance.rollout`` of ``manifest.yaml``::

    provenance:
      rollout:
        stage: shadow
        policy_hash: sha256:...          # the policy the stage was granted to
        history: [{from: none, to: shadow, decision: promoted, criteria: [...], evidence: [...], ...}]

The **policy hash** (:func:`policy_hash`) covers what the policy does -- the model file's bytes
and every manifest key but ``provenance`` (observation terms, normalization, action, rate,
robot, default pose) -- and nothing else, so writing a decision never changes it: a frozen
reference's hash, recorded by a fine-tuned child as its parent, stays verifiable after the
reference is promoted. A stage counts only while the recorded ``policy_hash`` equals the
bundle's own: a manifest copied beside another model, or a model retrained in place, is back
at ``none`` (and says why).

No ROS imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from simreal_ros.policy.bundle import MANIFEST_FILE, BundleError, PolicyBundle, PolicyManifest, read_manifest
from simreal_ros.policy.manifest_yaml import ManifestYamlError, load_manifest_yaml, short_repr
from simreal_ros.settings import setting, validate_fields

STAGES = ("none", "shadow", "blend", "active")
#: shield mode -> the stage it needs (``hold``: the policy never drives nor is compared)
MODE_STAGE: dict[str, str | None] = {"shadow": "shadow", "blend": "blend", "active": "active", "hold": None}
ROLLOUT_KEY = "rollout"
HASH_PREFIX = "sha256:"


class StageError(ValueError):
    """A bundle may not run in the asked mode, or its rollout record is malformed."""


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _raw_manifest(directory: Path) -> dict[str, Any]:
    try:
        data = load_manifest_yaml(directory / MANIFEST_FILE)
    except ManifestYamlError as exc:
        raise BundleError(str(exc)) from exc
    if not isinstance(data, dict):
        raise BundleError(f"{directory / MANIFEST_FILE}: manifest must be a mapping")
    return data


def policy_hash(bundle: str | Path) -> str:
    """``sha256:<hex>`` of what the policy does: the model file's bytes and the manifest's data
    without ``provenance`` (canonical JSON: key order, YAML formatting and comments do not count).

    Raises:
        BundleError: not a bundle, or a malformed manifest (names the file and key).
    """
    manifest, directory = read_manifest(bundle)
    data = _raw_manifest(directory)
    semantic = {k: v for k, v in data.items() if k != "provenance"}
    model = PolicyBundle(manifest=manifest, directory=directory).model_path
    h = hashlib.sha256()
    h.update(_canonical(semantic))
    h.update(b"\0model\0")
    with open(model, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return HASH_PREFIX + h.hexdigest()


@dataclass(frozen=True)
class RolloutState:
    """A bundle's stage as its manifest records it, checked against its policy hash."""

    name: str
    directory: Path
    stage: str  # the stage that counts (``none`` when the record does not hold)
    recorded_stage: str  # what the manifest says ("none" without a record)
    policy_hash: str
    has_record: bool  # the manifest has a rollout section (the bundle is under gated rollout)
    note: str = ""  # why the recorded stage does not count, if it does not
    history: tuple[dict[str, Any], ...] = ()

    def allows(self, shield_mode: str) -> bool:
        need = MODE_STAGE.get(shield_mode)
        return need is None or STAGES.index(self.stage) >= STAGES.index(need)


def _rollout_section(provenance: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    section = provenance.get(ROLLOUT_KEY)
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise StageError(f"{where}: manifest key 'provenance.rollout' must be a mapping, got {short_repr(section)}")
    stage = section.get("stage", "none")
    if stage not in STAGES:
        raise StageError(f"{where}: manifest key 'provenance.rollout.stage' = {short_repr(stage)}; allowed: "
                         f"{list(STAGES)}")
    history = section.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
        raise StageError(f"{where}: manifest key 'provenance.rollout.history' must be a list of mappings")
    ph = section.get("policy_hash", "")
    if not isinstance(ph, str):
        raise StageError(f"{where}: manifest key 'provenance.rollout.policy_hash' must be a string")
    return dict(section)


def read_stage(bundle: str | Path) -> RolloutState:
    """The bundle's :class:`RolloutState`.

    Raises:
        BundleError: not a bundle / malformed manifest. StageError: a malformed rollout section.
    """
    manifest, directory = read_manifest(bundle)
    where = str(directory / MANIFEST_FILE)
    current = policy_hash(directory)
    section = _rollout_section(manifest.provenance, where)
    if section is None:
        return RolloutState(manifest.name, directory, "none", "none", current, False)
    recorded = section.get("stage", "none")
    history = tuple(dict(h) for h in section.get("history", []))
    if section.get("policy_hash", "") != current:
        note = (f"the stage '{recorded}' was granted to policy {short_repr(section.get('policy_hash', ''), 24)}, "
                f"not to this bundle's policy {current[:19]}... (model or manifest changed since): it counts as "
                "'none'")
        return RolloutState(manifest.name, directory, "none", recorded, current, True, note, history)
    return RolloutState(manifest.name, directory, recorded, recorded, current, True, "", history)


def write_rollout(bundle: str | Path, stage: str, decision: Mapping[str, Any]) -> RolloutState:
    """Append ``decision`` to the manifest's rollout history and set its stage (``stage`` may be
    the current one: a refused promotion is recorded too). Only ``provenance.rollout`` changes;
    the policy hash is checked to be unchanged after writing (else the old manifest is put back).
    The manifest is replaced atomically (a crash leaves the old or the new file, never half).
    """
    if stage not in STAGES:
        raise StageError(f"stage {stage!r}; allowed: {list(STAGES)}")
    manifest, directory = read_manifest(bundle)
    mpath = directory / MANIFEST_FILE
    before = policy_hash(directory)
    data = _raw_manifest(directory)
    prov = data.get("provenance") or {}
    section = _rollout_section(prov, str(mpath)) or {}
    history = list(section.get("history", []))
    history.append(dict(decision))
    prov = {**prov, ROLLOUT_KEY: {"stage": stage, "policy_hash": before, "history": history}}
    data["provenance"] = prov
    PolicyManifest.from_dict(data)  # still a valid manifest
    old = mpath.read_bytes()
    text = yaml.safe_dump(data, sort_keys=False, width=120)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".yaml", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, mpath)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    after = policy_hash(directory)
    if after != before:  # pragma: no cover - only provenance changed; guard against a YAML round-trip surprise
        mpath.write_bytes(old)
        raise StageError(f"{mpath}: writing the rollout record changed the policy hash ({before} -> {after}); "
                         "the manifest was restored")
    return read_stage(directory)


def stage_error_text(state: RolloutState, shield_mode: str) -> str:
    need = MODE_STAGE[shield_mode]
    extra = f" ({state.note})" if state.note else ""
    return (f"policy bundle '{state.name}' ({state.directory}) is at rollout stage '{state.stage}'{extra}; shield "
            f"mode '{shield_mode}' needs stage '{need}' or later: promote it with `simreal promote {state.directory} "
            f"--to {STAGES[STAGES.index(state.stage) + 1]} --evidence ...` (one stage at a time), or force it "
            "(force_stage:=true / --force-stage true)")


def check_stage(bundle: str | Path, shield_mode: str, mode: str, force: bool = False) -> str | None:
    """Whether ``bundle`` may run under ``shield_mode`` on ``mode`` (``sim``/``real``).

    The rule: on the robot (``real``) the stage is enforced for every bundle. In simulation it is
    enforced for bundles under gated rollout (their manifest has a rollout record), so a sim
    session of such a bundle (e.g. ``simreal loop``'s hidden "real" table) runs only what the
    robot would; a bundle outside the rollout process (no record: the shipped references, a
    freshly trained bundle) runs in simulation with a warning, since the simulator cannot hurt
    the arm. ``force`` turns a refusal into a warning.

    Returns a warning text (or ``None``). Raises :class:`StageError` (one line naming the bundle,
    its stage and ``simreal promote``) when refused.
    """
    if MODE_STAGE.get(shield_mode) is None:
        return None
    state = read_stage(bundle)
    if state.allows(shield_mode):
        return None
    text = stage_error_text(state, shield_mode)
    if force:
        return f"{text} -- forced (force_stage), running anyway"
    if mode == "sim" and not state.has_record:
        return (f"policy bundle '{state.name}' has no rollout record (stage 'none'); shield mode '{shield_mode}' runs "
                "in simulation only: on the robot (mode:=real) it needs `simreal promote` first")
    raise StageError(text)


@dataclass(frozen=True)
class StageGate:
    """The rollout gate of a running shield: a switch to a shield mode (``mode`` parameter, the
    ``~/mode_*`` services) is checked with :func:`check_stage`, the launch file's own rule, for
    the bundle the graph runs; fixed at start (read-only parameters), so a running node cannot
    be talked out of it. The stage is read when the switch is asked for (a promotion written
    while the graph runs counts; a bundle changed on disk since counts as ``none``)."""

    rollout_bundle: str = setting("", "policy bundle whose rollout stage (provenance.rollout) gates the shield "
                                  "modes at configure and at every switch, with the launch file's rule "
                                  "(simreal_ros/rollout/stage.py); the launch graph sets it; empty: no gate",
                                  read_only=True)
    rollout_target: str = setting("real", "where the arm is, for the gate's rule: real enforces the stage for every "
                                  "bundle, sim only for bundles under rollout", choices=("sim", "real"),
                                  read_only=True)
    force_stage: bool = setting(False, "run modes beyond the bundle's stage anyway (warned; the launch file's "
                                "force_stage)", read_only=True)

    def __post_init__(self) -> None:
        validate_fields(self)

    def check(self, shield_mode: str) -> str | None:
        """:func:`check_stage` for the gate's bundle (``None`` without one); a bundle that cannot
        be read refuses too.

        Raises:
            StageError: the switch is refused (one line naming the bundle, its stage and
                ``simreal promote``).
        """
        if not self.rollout_bundle or MODE_STAGE.get(shield_mode) is None:
            return None
        try:
            return check_stage(self.rollout_bundle, shield_mode, self.rollout_target, self.force_stage)
        except BundleError as exc:
            raise StageError(f"shield mode '{shield_mode}' refused: the rollout bundle does not read: {exc}") from None


class GateRecord:
    """What a running shield's :class:`StageGate` decided, for its ``/diagnostics``: the refused
    switches (count and the latest reason) and the latest warning (a switch let through in
    simulation, or forced). The node only logs, answers and publishes what :meth:`ask` returns."""

    def __init__(self, gate: StageGate, warning: str | None = None) -> None:
        self.gate = gate
        self.refusals = 0
        self.last_refusal = ""
        self.warning = warning or ""

    def ask(self, shield_mode: str) -> tuple[str, str]:
        """``(refusal, warning)`` for a switch to ``shield_mode``: ``refusal`` is '' when the gate
        lets it through (counted and kept otherwise); ``warning`` is '' or this switch's warning."""
        try:
            warning = self.gate.check(shield_mode) or ""
        except StageError as exc:
            self.refusals += 1
            self.last_refusal = f"mode '{shield_mode}' refused: {exc}"
            return self.last_refusal, ""
        if warning:
            self.warning = warning
        return "", warning

    def values(self) -> dict[str, str]:
        """The gate's ``/diagnostics`` key-values."""
        return {"rollout_bundle": self.gate.rollout_bundle, "stage_refusals": str(self.refusals),
                "last_stage_refusal": self.last_refusal, "stage_warning": self.warning}
