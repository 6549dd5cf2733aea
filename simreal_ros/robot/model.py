"""The robot model: joints, all limit kinds, named poses and kinematics, from ``urdf/``.

One source of truth: joint names, origins, axes and position/velocity/effort limits come
from the URDF; acceleration, jerk and torque-rate limits from the ros2_control-style
``joint_limits`` YAML; the joint order and the ready pose from the SRDF. Nothing here
types a limit. No ROS imports.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml
from transforms3d.axangles import axangle2mat
from transforms3d.euler import euler2mat

from simreal_ros.resources import resource

#: Limit kinds, in the order used by :class:`JointLimits` and in error messages.
LIMIT_KINDS = (
    "position",
    "velocity",
    "acceleration",
    "jerk",
    "effort",
    "effort_rate",
)


class RobotDescriptionError(ValueError):
    """A robot description file is missing or malformed; the message names file and element."""


def _ro(a: Sequence[float]) -> np.ndarray:
    arr = np.array(a, dtype=float)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays in the robot's joint order (SI units, radians)."""

    position_min: np.ndarray
    position_max: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    effort: np.ndarray
    effort_rate: np.ndarray

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _ro(getattr(self, name)))
        if np.any(self.position_min >= self.position_max):
            raise RobotDescriptionError("position_min must be below position_max for every joint")
        for name in ("velocity", "acceleration", "jerk", "effort", "effort_rate"):
            arr = getattr(self, name)
            if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise RobotDescriptionError(f"{name} limits must be finite and > 0, got {arr}")


@dataclass(frozen=True)
class Joint:
    name: str
    parent: str
    child: str
    origin: np.ndarray  # 4x4 parent->joint frame at q = 0
    axis: np.ndarray  # unit axis in the joint frame


@dataclass(frozen=True)
class RobotModel:
    """Serial arm loaded from the package's description files.

    Attributes:
        name: robot name (``panda``).
        joints: the actuated joints, base to tip, in command order.
        limits: all limit kinds per joint.
        ready_pose: the SRDF's ``ready`` pose.
        flange_offset: fixed transform from the last joint's child link to the flange.
        source: the files this model was loaded from.
    """

    name: str
    joints: tuple[Joint, ...]
    limits: JointLimits
    ready_pose: np.ndarray
    base_link: str
    flange_link: str
    flange_offset: np.ndarray
    source: Mapping[str, str] = field(default_factory=dict)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    # ------------------------------------------------------------------ kinematics
    def link_transforms(self, q: Sequence[float]) -> list[np.ndarray]:
        """Base->joint-frame transforms of every joint (after its rotation), then the flange."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.n_joints,):
            raise ValueError(f"q must have {self.n_joints} values, got shape {q.shape}")
        T = np.eye(4)
        out = []
        for joint, qi in zip(self.joints, q):
            T = T @ joint.origin
            c, s = math.cos(qi), math.sin(qi)
            if joint.axis[2] == 1.0:  # the common z-axis joint: rotate the x and y columns only
                x, y = T[:, 0].copy(), T[:, 1].copy()
                T[:, 0], T[:, 1] = c * x + s * y, c * y - s * x
            else:
                R = np.eye(4)
                R[:3, :3] = axangle2mat(joint.axis, qi)
                T = T @ R
            out.append(T)
        out.append(T @ self.flange_offset)
        return out

    def fk(self, q: Sequence[float]) -> np.ndarray:
        """4x4 pose of the flange in the base frame."""
        return self.link_transforms(q)[-1]

    def jacobian(self, q: Sequence[float]) -> np.ndarray:
        """6xN geometric Jacobian of the flange (rows: linear, angular) in the base frame."""
        Ts = self.link_transforms(q)
        p_e = Ts[-1][:3, 3]
        J = np.zeros((6, self.n_joints))
        for i, (joint, T) in enumerate(zip(self.joints, Ts[:-1])):
            z = T[:3, :3] @ joint.axis
            J[:3, i] = np.cross(z, p_e - T[:3, 3])
            J[3:, i] = z
        return J

    # ------------------------------------------------------------------ limits
    def velocity_bounds(self, q: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lower/upper joint velocity bounds at configuration ``q``.

        Constant (±velocity limit) for the Panda. Kept as a function of ``q`` so that a
        variant whose velocity limit depends on position (FR3) plugs in here.
        """
        return -self.limits.velocity, self.limits.velocity.copy()

    def joint_index(self, names: Sequence[str]) -> np.ndarray:
        """Map ``names`` onto this robot's order; raises naming both sides on any mismatch."""
        names = list(names)
        if sorted(names) != sorted(self.joint_names) or len(set(names)) != len(names):
            missing = [n for n in self.joint_names if n not in names]
            extra = [n for n in names if n not in self.joint_names]
            raise ValueError(
                f"joint names {names} do not match robot '{self.name}' joints "
                f"{list(self.joint_names)} (missing: {missing}, unknown: {extra})"
            )
        return np.array([names.index(n) for n in self.joint_names])

    def with_limit_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> RobotModel:
        """Return a copy whose limits are tightened by ``{joint: {kind: value}}``.

        Kinds: ``min_position``, ``max_position``, ``max_velocity``, ``max_acceleration``,
        ``max_jerk``, ``max_effort``, ``max_effort_rate``. Loosening a limit beyond the
        robot description is refused: config may only make the robot safer.
        """
        return replace(self, limits=_apply_overrides(self.limits, self.joint_names, overrides, "overrides"))


_OVERRIDE_KEYS = {
    "min_position": "position_min",
    "max_position": "position_max",
    "max_velocity": "velocity",
    "max_acceleration": "acceleration",
    "max_jerk": "jerk",
    "max_effort": "effort",
    "max_effort_rate": "effort_rate",
}


def _apply_overrides(
    limits: JointLimits,
    joint_names: Sequence[str],
    overrides: Mapping[str, Mapping[str, float]],
    where: str,
) -> JointLimits:
    arrays = {k: np.array(getattr(limits, k)) for k in limits.__dataclass_fields__}
    for joint, entries in overrides.items():
        if joint not in joint_names:
            raise RobotDescriptionError(f"{where}: unknown joint '{joint}' (robot joints: {list(joint_names)})")
        i = list(joint_names).index(joint)
        for key, value in entries.items():
            if key.startswith("has_"):
                continue
            if key not in _OVERRIDE_KEYS:
                raise RobotDescriptionError(
                    f"{where}: joint '{joint}': unknown key '{key}' (allowed: {sorted(_OVERRIDE_KEYS)})"
                )
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise RobotDescriptionError(f"{where}: joint '{joint}' key '{key}': not a number: {value!r}") from None
            if not math.isfinite(v):
                raise RobotDescriptionError(f"{where}: joint '{joint}' key '{key}': must be finite, got {v}")
            field_ = _OVERRIDE_KEYS[key]
            old = arrays[field_][i]
            tighter = v >= old if key == "min_position" else v <= old
            if not tighter:
                raise RobotDescriptionError(
                    f"{where}: joint '{joint}' key '{key}'={v} is looser than the robot description ({old}); "
                    "config may only tighten limits"
                )
            arrays[field_][i] = v
    return JointLimits(**arrays)


# ---------------------------------------------------------------------- loading
def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise RobotDescriptionError(f"{path}: file not found") from None
    except ET.ParseError as exc:
        raise RobotDescriptionError(f"{path}: malformed XML: {exc}") from None


def _floats(path: Path, elem: ET.Element, attr: str, n: int, default: str | None = None) -> np.ndarray:
    text = elem.get(attr, default)
    where = f"{path}: <{elem.tag} name='{elem.get('name', '')}'> attribute '{attr}'"
    if text is None:
        raise RobotDescriptionError(f"{where} is missing")
    try:
        vals = [float(x) for x in text.split()]
    except ValueError:
        raise RobotDescriptionError(f"{where}: not numbers: {text!r}") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise RobotDescriptionError(f"{where}: expected {n} finite numbers, got {text!r}")
    return np.array(vals)


def _origin(path: Path, joint: ET.Element) -> np.ndarray:
    T = np.eye(4)
    org = joint.find("origin")
    if org is not None:
        T[:3, 3] = _floats(path, org, "xyz", 3, "0 0 0")
        r, p, y = _floats(path, org, "rpy", 3, "0 0 0")
        T[:3, :3] = euler2mat(r, p, y, "sxyz")  # URDF rpy: fixed-axis X, then Y, then Z
    return T


def _child(path: Path, joint: ET.Element, tag: str) -> ET.Element:
    el = joint.find(tag)
    if el is None:
        raise RobotDescriptionError(f"{path}: <joint name='{joint.get('name')}'> has no <{tag}> element")
    return el


def load_robot(
    name: str = "panda",
    urdf: str | Path | None = None,
    srdf: str | Path | None = None,
    joint_limits: str | Path | None = None,
) -> RobotModel:
    """Load a robot from ``urdf/<name>.urdf``, ``urdf/<name>.srdf`` and
    ``config/<name>_joint_limits.yaml`` (or the explicit paths given).

    Raises:
        RobotDescriptionError: a file is missing or malformed; the message names the file
            and the element or key.
    """
    urdf = Path(urdf) if urdf else resource("urdf", f"{name}.urdf")
    srdf = Path(srdf) if srdf else resource("urdf", f"{name}.srdf")
    joint_limits = Path(joint_limits) if joint_limits else resource("config", f"{name}_joint_limits.yaml")

    root = _parse_xml(urdf)
    if root.tag != "robot":
        raise RobotDescriptionError(f"{urdf}: root element is <{root.tag}>, expected <robot>")
    sroot = _parse_xml(srdf)
    chain = sroot.find("group/chain")
    if chain is None or not chain.get("base_link") or not chain.get("tip_link"):
        raise RobotDescriptionError(f"{srdf}: needs <group><chain base_link=... tip_link=...></group>")
    base, tip = chain.get("base_link"), chain.get("tip_link")

    by_child = {}
    for j in root.findall("joint"):
        jname = j.get("name")
        if not jname:
            raise RobotDescriptionError(f"{urdf}: a <joint> element has no name")
        child = _child(urdf, j, "child").get("link")
        by_child[child] = j
    # walk tip -> base
    walk: list[ET.Element] = []
    link = tip
    while link != base:
        if link not in by_child:
            raise RobotDescriptionError(f"{urdf}: no joint leads to link '{link}' on the chain {base} -> {tip}")
        j = by_child[link]
        walk.append(j)
        link = _child(urdf, j, "parent").get("link")
    walk.reverse()

    joints: list[Joint] = []
    pmin, pmax, vel, eff = [], [], [], []
    flange = np.eye(4)
    for j in walk:
        jtype = j.get("type")
        T = _origin(urdf, j)
        if jtype == "fixed":
            if joints:
                flange = flange @ T
                continue
            raise RobotDescriptionError(f"{urdf}: <joint name='{j.get('name')}'>: fixed joint before the first actuated joint")
        if jtype != "revolute":
            raise RobotDescriptionError(f"{urdf}: <joint name='{j.get('name')}'> type '{jtype}' is not supported (revolute/fixed)")
        if joints and not np.allclose(flange, np.eye(4)):
            raise RobotDescriptionError(f"{urdf}: fixed joints between actuated joints are not supported")
        axis_el = j.find("axis")
        axis = _floats(urdf, axis_el, "xyz", 3) if axis_el is not None else np.array([1.0, 0, 0])
        axis = axis / np.linalg.norm(axis)
        lim = _child(urdf, j, "limit")
        pmin.append(_floats(urdf, lim, "lower", 1)[0])
        pmax.append(_floats(urdf, lim, "upper", 1)[0])
        vel.append(_floats(urdf, lim, "velocity", 1)[0])
        eff.append(_floats(urdf, lim, "effort", 1)[0])
        joints.append(Joint(j.get("name"), _child(urdf, j, "parent").get("link"), _child(urdf, j, "child").get("link"), T, axis))
    names = [j.name for j in joints]
    n = len(joints)

    try:
        data = yaml.safe_load(Path(joint_limits).read_text())
    except FileNotFoundError:
        raise RobotDescriptionError(f"{joint_limits}: file not found") from None
    except yaml.YAMLError as exc:
        raise RobotDescriptionError(f"{joint_limits}: malformed YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("joint_limits"), dict):
        raise RobotDescriptionError(f"{joint_limits}: needs a top-level 'joint_limits' mapping")
    jl = data["joint_limits"]
    for jn in names:
        entry = jl.get(jn)
        for key in ("max_acceleration", "max_jerk", "max_effort_rate"):
            if not isinstance(entry, dict) or key not in entry:
                raise RobotDescriptionError(f"{joint_limits}: joint_limits/{jn}/{key} is missing")
    # acceleration/jerk/effort_rate start unbounded and are set from the YAML (any value is
    # "tighter" than inf); position/velocity/effort from the URDF may only be tightened.
    unset = JointLimits.__new__(JointLimits)
    for k, v in dict(position_min=pmin, position_max=pmax, velocity=vel, effort=eff,
                     acceleration=[math.inf] * n, jerk=[math.inf] * n, effort_rate=[math.inf] * n).items():
        object.__setattr__(unset, k, np.array(v, dtype=float))
    limits = _apply_overrides(unset, names, jl, str(joint_limits))

    ready = np.zeros(n)
    state = next((s for s in sroot.findall("group_state") if s.get("name") == "ready"), None)
    if state is None:
        raise RobotDescriptionError(f"{srdf}: no <group_state name='ready'>")
    seen = set()
    for js in state.findall("joint"):
        jn = js.get("name")
        if jn not in names:
            raise RobotDescriptionError(f"{srdf}: <group_state name='ready'> names unknown joint '{jn}'")
        ready[names.index(jn)] = _floats(srdf, js, "value", 1)[0]
        seen.add(jn)
    if seen != set(names):
        raise RobotDescriptionError(f"{srdf}: <group_state name='ready'> lacks joints {sorted(set(names) - seen)}")
    if np.any(ready < limits.position_min) or np.any(ready > limits.position_max):
        raise RobotDescriptionError(f"{srdf}: ready pose is outside the position limits")

    return RobotModel(
        name=root.get("name", name),
        joints=tuple(joints),
        limits=limits,
        ready_pose=_ro(ready),
        base_link=base,
        flange_link=tip,
        flange_offset=flange,
        source={"urdf": str(urdf), "srdf": str(srdf), "joint_limits": str(joint_limits)},
    )
