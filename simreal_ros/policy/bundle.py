"""Policy bundles: a model file plus a manifest that states everything the model assumes.

A bundle is a directory holding ``manifest.yaml`` and the model (ONNX or TorchScript)::

    format: simreal_policy/1
    name: reach_default
    model: {file: policy.onnx, backend: onnx}            # or {file: policy.pt, backend: torchscript}
    robot: {name: panda, joint_names: [panda_joint1, ...]}
    control_rate_hz: 20.0
    observation:
      terms: [{name: joint_pos, size: 7}, ...]            # simreal_ros.policy.observation.TERMS
      normalization: {mean: [...], std: [...], clip: 10.0}
    action: {type: joint_position_delta, scale: 0.05, clip: 1.0}
    default_pose: [...]
    provenance: {training: {...}, randomization: {...}, seed: 0, evaluation: {...}, created: ..., tool: ...}

The model takes one float32 input ``[batch, obs_dim]`` -- the observation normalised as
``clip((obs - mean) / std, -clip, clip)`` -- and gives one output ``[batch, n_joints]``, the
raw action before clipping and scaling (see :mod:`simreal_ros.policy.action`).

Loading checks the manifest (every error names its key), the manifest's joints against the
robot, and the model's input/output shapes against the manifest; a mismatch raises
:class:`BundleError` naming both sides, so a wrong policy never starts.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from simreal_ros.policy.action import ACTION_TYPES
from simreal_ros.policy.observation import TERMS
from simreal_ros.robot import RobotModel

FORMAT = "simreal_policy/1"
MANIFEST_FILE = "manifest.yaml"
BACKENDS = ("onnx", "torchscript")


class BundleError(ValueError):
    """A bundle is malformed or does not match the robot or its model; the message says where."""


def _err(key: str, why: str) -> BundleError:
    return BundleError(f"manifest key '{key}': {why}")


def _floats(key: str, values: Any, n: int | None = None, positive: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise _err(key, f"expected a list of numbers, got {values!r}") from exc
    if n is not None and arr.size != n:
        raise _err(key, f"has {arr.size} values, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise _err(key, "values must be finite")
    if positive and np.any(arr <= 0):
        raise _err(key, f"values must be > 0, got {arr.tolist()}")
    return arr


def _number(key: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(key, f"expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise _err(key, f"must be > 0, got {value}")
    return float(value)


@dataclass
class PolicyManifest:
    """What a policy model assumes; validated on construction (errors name the key)."""

    name: str
    model_file: str
    backend: str
    robot_name: str
    joint_names: list[str]
    control_rate_hz: float
    obs_terms: list[tuple[str, int]]
    obs_mean: np.ndarray
    obs_std: np.ndarray
    obs_clip: float
    action_type: str
    action_scale: float
    action_clip: float
    default_pose: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise _err("format", f"'{self.format}' is not supported (expected '{FORMAT}')")
        if not isinstance(self.name, str) or not self.name:
            raise _err("name", "must be a non-empty string")
        if not isinstance(self.model_file, str) or not self.model_file:
            raise _err("model.file", "must be a non-empty file name")
        if self.backend not in BACKENDS:
            raise _err("model.backend", f"'{self.backend}' is not one of {list(BACKENDS)}")
        names = list(self.joint_names) if isinstance(self.joint_names, (list, tuple)) else None
        if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise _err("robot.joint_names", f"must be a non-empty list of distinct names, got {self.joint_names!r}")
        self.joint_names = names
        self.control_rate_hz = _number("control_rate_hz", self.control_rate_hz)
        n = len(names)
        if not self.obs_terms:
            raise _err("observation.terms", "must list at least one term")
        terms = []
        for i, term in enumerate(self.obs_terms):
            tname, size = term
            if tname not in TERMS:
                raise _err(f"observation.terms[{i}].name", f"unknown term '{tname}'; known: {sorted(TERMS)}")
            expected = TERMS[tname][0](n)
            if size != expected:
                raise _err(f"observation.terms[{i}].size",
                           f"term '{tname}' has size {size} in the manifest but {expected} for {n} joints")
            terms.append((tname, int(size)))
        self.obs_terms = terms
        dim = self.obs_dim
        self.obs_mean = _floats("observation.normalization.mean", self.obs_mean, dim)
        self.obs_std = _floats("observation.normalization.std", self.obs_std, dim, positive=True)
        self.obs_clip = _number("observation.normalization.clip", self.obs_clip)
        if self.action_type not in ACTION_TYPES:
            raise _err("action.type", f"'{self.action_type}' is not one of {list(ACTION_TYPES)}")
        self.action_scale = _number("action.scale", self.action_scale)
        self.action_clip = _number("action.clip", self.action_clip)
        self.default_pose = _floats("default_pose", self.default_pose, n)
        if not isinstance(self.provenance, dict):
            raise _err("provenance", f"must be a mapping, got {type(self.provenance).__name__}")

    # ------------------------------------------------------------------ derived
    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def obs_dim(self) -> int:
        return sum(size for _, size in self.obs_terms)

    @property
    def term_names(self) -> list[str]:
        return [name for name, _ in self.obs_terms]

    def term_slices(self) -> dict[str, slice]:
        """Where each term sits in the observation vector."""
        out, start = {}, 0
        for name, size in self.obs_terms:
            out[name] = slice(start, start + size)
            start += size
        return out

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """``clip((obs - mean) / std, -clip, clip)`` as float32: what the model is fed."""
        z = (np.asarray(obs, dtype=float) - self.obs_mean) / self.obs_std
        return np.clip(z, -self.obs_clip, self.obs_clip).astype(np.float32)

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyManifest:
        """Build from the YAML shape (see the module docstring); errors name the key."""
        if not isinstance(d, Mapping):
            raise BundleError(f"manifest must be a mapping, got {type(d).__name__}")

        def section(key: str, parent: Mapping[str, Any] = d, prefix: str = "") -> Mapping[str, Any]:
            if key not in parent:
                raise _err(prefix + key, "is missing")
            val = parent[key]
            if not isinstance(val, Mapping):
                raise _err(prefix + key, f"must be a mapping, got {val!r}")
            return val

        def get(parent: Mapping[str, Any], key: str, prefix: str = "", default: Any = ...) -> Any:
            if key not in parent:
                if default is ...:
                    raise _err(prefix + key, "is missing")
                return default
            return parent[key]

        model, robot, obs, action = (section("model"), section("robot"), section("observation"),
                                     section("action"))
        raw_terms = get(obs, "terms", "observation.")
        if not isinstance(raw_terms, list):
            raise _err("observation.terms", f"must be a list of {{name, size}}, got {raw_terms!r}")
        terms = []
        for i, t in enumerate(raw_terms):
            if not isinstance(t, Mapping) or "name" not in t or "size" not in t:
                raise _err(f"observation.terms[{i}]", f"must be {{name: ..., size: ...}}, got {t!r}")
            if isinstance(t["size"], bool) or not isinstance(t["size"], int):
                raise _err(f"observation.terms[{i}].size", f"must be an integer, got {t['size']!r}")
            terms.append((t["name"], t["size"]))
        joint_names = get(robot, "joint_names", "robot.")
        dim = sum(s for _, s in terms)
        norm = obs.get("normalization") or {}
        if not isinstance(norm, Mapping):
            raise _err("observation.normalization", f"must be a mapping, got {norm!r}")
        return cls(
            format=get(d, "format"),
            name=get(d, "name"),
            model_file=get(model, "file", "model."),
            backend=get(model, "backend", "model.", "onnx"),
            robot_name=str(get(robot, "name", "robot.")),
            joint_names=joint_names,
            control_rate_hz=get(d, "control_rate_hz"),
            obs_terms=terms,
            obs_mean=norm.get("mean", [0.0] * dim),
            obs_std=norm.get("std", [1.0] * dim),
            obs_clip=norm.get("clip", 10.0),
            action_type=get(action, "type", "action."),
            action_scale=get(action, "scale", "action."),
            action_clip=get(action, "clip", "action.", 1.0),
            default_pose=get(d, "default_pose"),
            provenance=dict(d.get("provenance") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The YAML shape (plain Python types)."""
        return {
            "format": self.format,
            "name": self.name,
            "model": {"file": self.model_file, "backend": self.backend},
            "robot": {"name": self.robot_name, "joint_names": list(self.joint_names)},
            "control_rate_hz": float(self.control_rate_hz),
            "observation": {
                "terms": [{"name": n, "size": int(s)} for n, s in self.obs_terms],
                "normalization": {"mean": self.obs_mean.tolist(), "std": self.obs_std.tolist(),
                                  "clip": float(self.obs_clip)},
            },
            "action": {"type": self.action_type, "scale": float(self.action_scale), "clip": float(self.action_clip)},
            "default_pose": self.default_pose.tolist(),
            "provenance": _plain(self.provenance),
        }


def _plain(x: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain YAML-safe Python."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def check_robot(manifest: PolicyManifest, robot: RobotModel) -> None:
    """Refuse a manifest whose joints (names, order) or default pose do not fit ``robot``."""
    if list(manifest.joint_names) != list(robot.joint_names):
        same_set = sorted(manifest.joint_names) == sorted(robot.joint_names)
        how = "same joints in a different order" if same_set else "different joints"
        raise BundleError(f"policy '{manifest.name}' joint_names {list(manifest.joint_names)} do not match robot "
                          f"'{robot.name}' joints {list(robot.joint_names)} ({how}); the policy's joint order "
                          "must equal the robot's")
    lim = robot.limits
    out = (manifest.default_pose < lim.position_min) | (manifest.default_pose > lim.position_max)
    if np.any(out):
        bad = [robot.joint_names[i] for i in np.flatnonzero(out)]
        raise BundleError(f"policy '{manifest.name}' default_pose {manifest.default_pose.tolist()} is outside "
                          f"robot '{robot.name}' position limits at {bad}")


@dataclass
class PolicyBundle:
    """A loaded bundle: manifest, where it lives, and (when loaded) the model backend."""

    manifest: PolicyManifest
    directory: Path
    backend: Any = None  # simreal_ros.policy.backends.Backend

    @property
    def model_path(self) -> Path:
        return self.directory / self.manifest.model_file

    def infer(self, obs_normalized: np.ndarray) -> np.ndarray:
        """Raw action(s) for normalised observation(s) ``[obs_dim]`` or ``[batch, obs_dim]``."""
        if self.backend is None:
            raise BundleError(f"bundle '{self.manifest.name}' was loaded without its model (load_model=False)")
        return self.backend(obs_normalized)


def read_manifest(path_or_dir: str | Path) -> tuple[PolicyManifest, Path]:
    """Parse ``manifest.yaml`` of a bundle directory (or the manifest path itself)."""
    path = Path(path_or_dir)
    mpath = path / MANIFEST_FILE if path.is_dir() else path
    if not mpath.is_file():
        raise BundleError(f"no policy bundle at {path}: {mpath} does not exist")
    try:
        data = yaml.safe_load(mpath.read_text())
    except yaml.YAMLError as exc:
        raise BundleError(f"{mpath}: not valid YAML: {exc}") from exc
    try:
        manifest = PolicyManifest.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"{mpath}: {exc}") from exc
    return manifest, mpath.parent


def load_bundle(path_or_dir: str | Path, robot: RobotModel | None = None, load_model: bool = True,
                warmup: int = 20) -> PolicyBundle:
    """Load and check a bundle; raise :class:`BundleError` naming both sides of any mismatch.

    Args:
        path_or_dir: bundle directory (or its ``manifest.yaml``).
        robot: when given, the manifest's joints and default pose are checked against it.
        load_model: also load the model backend and check its shapes against the manifest.
        warmup: inference calls made at load (the first calls are slow).
    """
    manifest, directory = read_manifest(path_or_dir)
    if robot is not None:
        check_robot(manifest, robot)
    bundle = PolicyBundle(manifest=manifest, directory=directory)
    if not bundle.model_path.is_file():
        raise BundleError(f"{directory / MANIFEST_FILE}: model.file '{manifest.model_file}' does not exist "
                          f"({bundle.model_path})")
    if load_model:
        from simreal_ros.policy.backends import make_backend

        bundle.backend = make_backend(bundle, warmup=warmup)
    return bundle


def save_bundle(directory: str | Path, manifest: PolicyManifest, model_file: str | Path) -> Path:
    """Write a bundle: copy ``model_file`` to ``<directory>/<manifest.model_file>`` and write the manifest.

    Returns the bundle directory. The result is loaded back (model included) to check it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    src, dst = Path(model_file), directory / manifest.model_file
    if not src.is_file():
        raise BundleError(f"model file {src} does not exist")
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    (directory / MANIFEST_FILE).write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, width=120))
    load_bundle(directory, warmup=1)
    return directory


def manifest_for(robot: RobotModel, name: str, model_file: str, terms: Sequence[str], *, backend: str = "onnx",
                 control_rate_hz: float = 20.0, action_type: str = "joint_position_delta",
                 action_scale: float = 0.05, action_clip: float = 1.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, obs_clip: float = 10.0,
                 provenance: Mapping[str, Any] | None = None) -> PolicyManifest:
    """Convenience: a manifest for ``robot`` with term sizes filled in (identity normalisation by default)."""
    n = robot.n_joints
    sizes = [TERMS[t][0](n) if t in TERMS else 0 for t in terms]
    dim = sum(sizes)
    return PolicyManifest(
        name=name, model_file=model_file, backend=backend, robot_name=robot.name,
        joint_names=list(robot.joint_names), control_rate_hz=control_rate_hz,
        obs_terms=list(zip(terms, sizes)), obs_mean=np.zeros(dim) if mean is None else mean,
        obs_std=np.ones(dim) if std is None else std, obs_clip=obs_clip, action_type=action_type,
        action_scale=action_scale, action_clip=action_clip, default_pose=robot.ready_pose.copy(),
        provenance=dict(provenance or {}),
    )
