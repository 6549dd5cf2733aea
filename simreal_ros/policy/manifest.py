"""The policy manifest: what a model assumes, validated key by key (see :mod:`simreal_ros.policy.bundle`).

Every value is checked for type, range and size before an array is built from it, so a hostile
manifest (a term size of 10**12, a two-million-value mean, a list where a name belongs) is a
:class:`BundleError` naming the key, never a traceback or a long computation. No ROS imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Mapping, Sequence

import numpy as np

from simreal_ros.policy.action import ACTION_TYPES, action_dim
from simreal_ros.policy.manifest_yaml import short_repr
from simreal_ros.policy.observation import SIZED_TERMS, TERMS
from simreal_ros.robot import RobotModel

FORMAT = "simreal_policy/1"
BACKENDS = ("onnx", "torchscript")
#: most joints a manifest may list (bounds the observation size before any array is built)
MAX_JOINTS = 64
#: highest control rate a manifest may declare: the arm's own controller runs at 1 kHz
MAX_CONTROL_RATE_HZ = 1000.0
#: longest name (policy, robot, joint, model file) accepted
MAX_NAME = 255


class BundleError(ValueError):
    """A bundle is malformed or does not match the robot or its model; the message says where."""


def _err(key: str, why: str) -> BundleError:
    return BundleError(f"manifest key '{key}': {why}")


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _floats(key: str, values: Any, n: int, positive: bool = False) -> np.ndarray:
    """Exactly ``n`` finite real numbers; the length is checked before anything is converted."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "fiu":
            raise _err(key, f"expected a flat list of {n} numbers, got an array {values.dtype} of shape "
                            f"{list(values.shape)}")
    elif not isinstance(values, (list, tuple)):
        raise _err(key, f"expected a list of {n} numbers, got {short_repr(values)}")
    if len(values) != n:
        raise _err(key, f"has {len(values)} values, expected {n}")
    if not isinstance(values, np.ndarray):
        bad = [i for i, v in enumerate(values) if not _is_real(v)]
        if bad:
            raise _err(f"{key}[{bad[0]}]", f"expected a number, got {short_repr(values[bad[0]])}")
    arr = np.array(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise _err(key, "values must be finite")
    if positive and np.any(arr <= 0):
        raise _err(key, f"values must be > 0, got {short_repr(arr.tolist())}")
    return arr


def _number(key: str, value: Any, positive: bool = True, high: float = math.inf) -> float:
    if not _is_real(value) or not math.isfinite(value):
        raise _err(key, f"expected a finite number, got {short_repr(value)}")
    if positive and value <= 0:
        raise _err(key, f"must be > 0, got {value}")
    if value > high:
        raise _err(key, f"must be <= {high:g}, got {value:g}")
    return float(value)


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise _err(key, f"must be a non-empty string of at most {MAX_NAME} characters, got {short_repr(value)}")
    return value


def _model_file(value: Any) -> str:
    """A relative path inside the bundle: never absolute, never through ``..``."""
    name = _name("model.file", value)
    parts = name.replace("\\", "/").split("/")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise _err("model.file", f"{short_repr(name)} is an absolute path; the model must be a file inside the "
                                 "bundle directory (a relative name such as policy.onnx)")
    if ".." in parts:
        raise _err("model.file", f"{short_repr(name)} leads out of the bundle directory ('..'); the model must be a "
                                 "file inside it")
    return name


@dataclass
class PolicyManifest:
    """What a policy model assumes; validated on construction (errors name the key).

    ``obs_mean``/``obs_std`` of ``None`` are the identity normalisation (zeros/ones).
    """

    name: str
    model_file: str
    backend: str
    robot_name: str
    joint_names: list[str]
    control_rate_hz: float
    obs_terms: list[tuple[str, int]]
    obs_mean: np.ndarray | None
    obs_std: np.ndarray | None
    obs_clip: float
    action_type: str
    action_scale: float
    action_clip: float
    default_pose: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    #: ``tool_planar_delta`` only: the plane (see :data:`PLANAR_KEYS`)
    action_planar: dict[str, Any] | None = None
    #: the declared action filter: the clipped action moves at most this much per cycle from the
    #: last one (:func:`simreal_ros.policy.action.limit_change`); ``None``: no filter
    action_max_change: float | None = None

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise _err("format", f"{short_repr(self.format)} is not supported (expected '{FORMAT}')")
        self.name = _name("name", self.name)
        self.model_file = _model_file(self.model_file)
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise _err("model.backend", f"{short_repr(self.backend)} is not one of {list(BACKENDS)}")
        self.robot_name = _name("robot.name", self.robot_name)
        names = list(self.joint_names) if isinstance(self.joint_names, (list, tuple)) else None
        if not names or len(names) > MAX_JOINTS or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME
                                                           for n in names) or len(set(names)) != len(names):
            raise _err("robot.joint_names", f"must be a list of 1 to {MAX_JOINTS} distinct names, got "
                                            f"{short_repr(self.joint_names)}")
        self.joint_names = names
        self.control_rate_hz = _number("control_rate_hz", self.control_rate_hz, high=MAX_CONTROL_RATE_HZ)
        self.obs_terms = self._checked_terms(len(names))
        dim = self.obs_dim  # bounded: each term's size is the known size for <= MAX_JOINTS joints
        self.obs_mean = _floats("observation.normalization.mean",
                                np.zeros(dim) if self.obs_mean is None else self.obs_mean, dim)
        self.obs_std = _floats("observation.normalization.std",
                               np.ones(dim) if self.obs_std is None else self.obs_std, dim, positive=True)
        self.obs_clip = _number("observation.normalization.clip", self.obs_clip)
        if not isinstance(self.action_type, str) or self.action_type not in ACTION_TYPES:
            raise _err("action.type", f"{short_repr(self.action_type)} is not one of {list(ACTION_TYPES)}")
        self.action_scale = _number("action.scale", self.action_scale)
        self.action_clip = _number("action.clip", self.action_clip)
        self.default_pose = _floats("default_pose", self.default_pose, len(names))
        self.action_planar = _planar(self.action_type, self.action_planar)
        if self.action_max_change is not None:
            self.action_max_change = _number("action.max_change", self.action_max_change, high=2 * self.action_clip)
        if not isinstance(self.provenance, Mapping):
            raise _err("provenance", f"must be a mapping, got {type(self.provenance).__name__}")
        self.provenance = dict(self.provenance)

    def _checked_terms(self, n: int) -> list[tuple[str, int]]:
        if not isinstance(self.obs_terms, (list, tuple)) or not self.obs_terms:
            raise _err("observation.terms", "must list at least one term")
        if len(self.obs_terms) > len(TERMS):
            raise _err("observation.terms", f"has {len(self.obs_terms)} terms; there are only {len(TERMS)} kinds")
        terms: list[tuple[str, int]] = []
        for i, term in enumerate(self.obs_terms):
            if not isinstance(term, (list, tuple)) or len(term) != 2:
                raise _err(f"observation.terms[{i}]", f"must be (name, size), got {short_repr(term)}")
            tname, size = term
            if not isinstance(tname, str) or tname not in TERMS:
                raise _err(f"observation.terms[{i}].name",
                           f"unknown term {short_repr(tname)}; known: {sorted(TERMS)}")
            if any(tname == t for t, _ in terms):
                raise _err(f"observation.terms[{i}].name", f"term '{tname}' is listed twice")
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
                raise _err(f"observation.terms[{i}].size", f"must be an integer, got {short_repr(size)}")
            if tname in SIZED_TERMS:  # declared by the manifest, bounded
                low, high = SIZED_TERMS[tname]
                if not low <= size <= high:
                    raise _err(f"observation.terms[{i}].size",
                               f"term '{tname}' must have a size in [{low}, {high}], got {size}")
                terms.append((tname, int(size)))
                continue
            expected = TERMS[tname][0](n)
            if size != expected:
                raise _err(f"observation.terms[{i}].size",
                           f"term '{tname}' has size {size} in the manifest but {expected} for {n} joints")
            terms.append((tname, int(size)))
        return terms

    # ------------------------------------------------------------------ derived
    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def action_dim(self) -> int:
        """Size of the model's output (joints, or 2 for planar tool actions)."""
        return action_dim(self.action_type, self.n_joints)

    def planar_frame(self, robot: RobotModel):
        """The :class:`~simreal_ros.robot.planar.PlanarFrame` of a ``tool_planar_delta`` bundle on ``robot``."""
        from simreal_ros.robot.planar import PlanarFrame

        p = self.action_planar
        if p is None:
            raise BundleError(f"policy '{self.name}' has action type '{self.action_type}', not tool_planar_delta")
        try:
            return PlanarFrame.for_robot(robot, p["height"], np.asarray(p["tip"]), tuple(p["workspace"]),
                                         tuple(p["start"]))
        except ValueError as exc:
            raise _err("action.planar", str(exc)) from None

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
                raise _err(prefix + key, f"must be a mapping, got {short_repr(val)}")
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
            raise _err("observation.terms", f"must be a list of {{name, size}}, got {short_repr(raw_terms)}")
        terms = []
        for i, t in enumerate(raw_terms[: len(TERMS) + 1]):  # more than there are kinds is refused below
            if not isinstance(t, Mapping) or "name" not in t or "size" not in t:
                raise _err(f"observation.terms[{i}]", f"must be {{name: ..., size: ...}}, got {short_repr(t)}")
            terms.append((t["name"], t["size"]))
        norm = obs.get("normalization") or {}
        if not isinstance(norm, Mapping):
            raise _err("observation.normalization", f"must be a mapping, got {short_repr(norm)}")
        provenance = d.get("provenance")
        if provenance is None:
            provenance = {}
        if not isinstance(provenance, Mapping):
            raise _err("provenance", f"must be a mapping (training, randomization, seed, ...), got "
                                     f"{type(provenance).__name__}")
        return cls(
            format=get(d, "format"),
            name=get(d, "name"),
            model_file=get(model, "file", "model."),
            backend=get(model, "backend", "model.", "onnx"),
            robot_name=get(robot, "name", "robot."),
            joint_names=get(robot, "joint_names", "robot."),
            control_rate_hz=get(d, "control_rate_hz"),
            obs_terms=terms,
            obs_mean=norm.get("mean"),
            obs_std=norm.get("std"),
            obs_clip=norm.get("clip", 10.0),
            action_type=get(action, "type", "action."),
            action_scale=get(action, "scale", "action."),
            action_clip=get(action, "clip", "action.", 1.0),
            action_planar=action.get("planar"),
            action_max_change=action.get("max_change"),
            default_pose=get(d, "default_pose"),
            provenance=provenance,
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
            "action": {"type": self.action_type, "scale": float(self.action_scale), "clip": float(self.action_clip),
                       **({"max_change": float(self.action_max_change)} if self.action_max_change is not None else {}),
                       **({"planar": _plain(self.action_planar)} if self.action_planar is not None else {})},
            "default_pose": self.default_pose.tolist(),
            "provenance": _plain(self.provenance),
        }


#: ``action.planar`` of a ``tool_planar_delta`` bundle: key -> (number of values, meaning)
PLANAR_KEYS: dict[str, tuple[int, str]] = {
    "height": (1, "tool tip height in the base frame (m)"),
    "tip": (3, "tool tip in the flange frame (m)"),
    "workspace": (4, "[xmin, ymin, xmax, ymax] the tip is kept in (m)"),
    "start": (2, "tool position (x, y) the redundancy's rest posture is solved at (m)"),
    "max_lead": (1, "most the tip's reference may lead the measured tip (m)"),
}


def _planar(action_type: Any, value: Any) -> dict[str, Any] | None:
    if action_type != "tool_planar_delta":
        if value is not None:
            raise _err("action.planar", f"is only for action type tool_planar_delta, not {short_repr(action_type)}")
        return None
    if not isinstance(value, Mapping):
        raise _err("action.planar", f"is required for tool_planar_delta: a mapping with {sorted(PLANAR_KEYS)}, got "
                                    f"{short_repr(value)}")
    unknown = sorted(str(k) for k in value if k not in PLANAR_KEYS)
    missing = [k for k in PLANAR_KEYS if k not in value]
    if unknown or missing:
        raise _err("action.planar", f"unknown keys {unknown}, missing keys {missing}")
    out: dict[str, Any] = {}
    for key, (size, _) in PLANAR_KEYS.items():
        if size == 1:
            out[key] = _number(f"action.planar.{key}", value[key], high=10.0)
        else:
            out[key] = [float(v) for v in _floats(f"action.planar.{key}", value[key], size)]
    w = out["workspace"]
    if not (w[0] < w[2] and w[1] < w[3]):
        raise _err("action.planar.workspace", f"must be [xmin, ymin, xmax, ymax] with min < max, got {w}")
    return out


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


def manifest_for(robot: RobotModel, name: str, model_file: str, terms: Sequence[str | tuple[str, int]], *,
                 backend: str = "onnx",
                 control_rate_hz: float = 20.0, action_type: str = "joint_position_delta",
                 action_scale: float = 0.05, action_clip: float = 1.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, obs_clip: float = 10.0,
                 provenance: Mapping[str, Any] | None = None,
                 action_planar: Mapping[str, Any] | None = None,
                 action_max_change: float | None = None) -> PolicyManifest:
    """Convenience: a manifest for ``robot`` with term sizes filled in (identity normalisation by default);
    a term of :data:`~simreal_ros.policy.observation.SIZED_TERMS` is given as ``(name, size)``."""
    n = robot.n_joints
    pairs = [tuple(t) if isinstance(t, tuple) else (t, TERMS[t][0](n) if isinstance(t, str) and t in TERMS else 0)
             for t in terms]
    return PolicyManifest(
        name=name, model_file=model_file, backend=backend, robot_name=robot.name,
        joint_names=list(robot.joint_names), control_rate_hz=control_rate_hz,
        obs_terms=pairs, obs_mean=mean, obs_std=std, obs_clip=obs_clip, action_type=action_type,
        action_scale=action_scale, action_clip=action_clip, default_pose=robot.ready_pose.copy(),
        provenance=dict(provenance or {}), action_planar=None if action_planar is None else dict(action_planar),
        action_max_change=action_max_change,
    )
