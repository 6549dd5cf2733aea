"""The robot model: joints, all limit kinds, impedance gains, named poses and kinematics.

:func:`simreal_ros.robot.loader.load_robot` builds it from the description files (one source
of truth, see there). Nothing here types a limit. No ROS imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
from transforms3d.axangles import axangle2mat

from simreal_ros.robot.errors import RobotDescriptionError, as_number
from simreal_ros.robot.gains import ImpedanceGains, _ro

#: Limit kinds, in the order used by :class:`JointLimits` and in error messages.
LIMIT_KINDS = (
    "position",
    "velocity",
    "acceleration",
    "jerk",
    "effort",
    "effort_rate",
)




@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays in the robot's joint order (SI units, radians).

    The loader checks every value with the file and joint it came from before building this;
    the checks here are the last line for limits built in code.
    """

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
        bad = np.flatnonzero(~(self.position_min < self.position_max))
        if len(bad):
            i = int(bad[0])
            raise RobotDescriptionError(f"JointLimits: joint index {i}: position_min {self.position_min[i]!r} must be "
                                        f"below position_max {self.position_max[i]!r}")
        for name in ("velocity", "acceleration", "jerk", "effort", "effort_rate"):
            arr = getattr(self, name)
            bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
            if len(bad):
                i = int(bad[0])
                raise RobotDescriptionError(f"JointLimits: joint index {i}: {name} limit must be finite and > 0, "
                                            f"got {arr[i]!r}")


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
        gains: the arm controller's joint impedance gains (``config/<name>_impedance.yaml``).
        ready_pose: the SRDF's ``ready`` pose.
        flange_offset: fixed transform from the last joint's child link to the flange.
        source: the files this model was loaded from.
    """

    name: str
    joints: tuple[Joint, ...]
    limits: JointLimits
    gains: ImpedanceGains
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
    @cached_property
    def _chain(self) -> tuple:
        """Each joint's origin as (row-major 3x3 rotation, translation) floats, its axis and whether the
        axis is +z; then the flange offset: what :meth:`link_transforms` composes in plain floats."""
        def split(T):
            return tuple(float(v) for v in T[:3, :3].ravel()), tuple(float(v) for v in T[:3, 3])
        joints = tuple((*split(j.origin), bool(np.array_equal(j.axis, (0.0, 0.0, 1.0))),
                        np.asarray(j.axis, dtype=float)) for j in self.joints)
        return joints, split(self.flange_offset)

    def link_transforms(self, q: Sequence[float]) -> list[np.ndarray]:
        """Base->joint-frame transforms of every joint (after its rotation), then the flange.

        Composed in Python floats (a 3x3 rotation and a translation per joint) and turned into arrays
        once: numpy's per-call overhead on 4x4 products made this the largest part of a policy cycle
        (165 us for the Panda; about 30 us now)."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.n_joints,):
            raise ValueError(f"q must have {self.n_joints} values, got shape {q.shape}")
        joints, flange = self._chain
        r0, r1, r2, r3, r4, r5, r6, r7, r8 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0
        px = py = pz = 0.0
        flat: list[float] = []
        for ((b0, b1, b2, b3, b4, b5, b6, b7, b8), (tx, ty, tz), about_z, axis), qi in zip(joints, q.tolist()):
            px, py, pz = (px + r0 * tx + r1 * ty + r2 * tz, py + r3 * tx + r4 * ty + r5 * tz,
                          pz + r6 * tx + r7 * ty + r8 * tz)
            r0, r1, r2, r3, r4, r5, r6, r7, r8 = (
                r0 * b0 + r1 * b3 + r2 * b6, r0 * b1 + r1 * b4 + r2 * b7, r0 * b2 + r1 * b5 + r2 * b8,
                r3 * b0 + r4 * b3 + r5 * b6, r3 * b1 + r4 * b4 + r5 * b7, r3 * b2 + r4 * b5 + r5 * b8,
                r6 * b0 + r7 * b3 + r8 * b6, r6 * b1 + r7 * b4 + r8 * b7, r6 * b2 + r7 * b5 + r8 * b8)
            if about_z:  # the common z-axis joint: rotate the x and y columns only
                c, s = math.cos(qi), math.sin(qi)
                r0, r1 = c * r0 + s * r1, c * r1 - s * r0
                r3, r4 = c * r3 + s * r4, c * r4 - s * r3
                r6, r7 = c * r6 + s * r7, c * r7 - s * r6
            else:
                (b0, b1, b2), (b3, b4, b5), (b6, b7, b8) = axangle2mat(axis, qi).tolist()
                r0, r1, r2, r3, r4, r5, r6, r7, r8 = (
                    r0 * b0 + r1 * b3 + r2 * b6, r0 * b1 + r1 * b4 + r2 * b7, r0 * b2 + r1 * b5 + r2 * b8,
                    r3 * b0 + r4 * b3 + r5 * b6, r3 * b1 + r4 * b4 + r5 * b7, r3 * b2 + r4 * b5 + r5 * b8,
                    r6 * b0 + r7 * b3 + r8 * b6, r6 * b1 + r7 * b4 + r8 * b7, r6 * b2 + r7 * b5 + r8 * b8)
            flat += (r0, r1, r2, px, r3, r4, r5, py, r6, r7, r8, pz, 0.0, 0.0, 0.0, 1.0)
        (b0, b1, b2, b3, b4, b5, b6, b7, b8), (tx, ty, tz) = flange
        flat += (r0 * b0 + r1 * b3 + r2 * b6, r0 * b1 + r1 * b4 + r2 * b7, r0 * b2 + r1 * b5 + r2 * b8,
                 px + r0 * tx + r1 * ty + r2 * tz,
                 r3 * b0 + r4 * b3 + r5 * b6, r3 * b1 + r4 * b4 + r5 * b7, r3 * b2 + r4 * b5 + r5 * b8,
                 py + r3 * tx + r4 * ty + r5 * tz,
                 r6 * b0 + r7 * b3 + r8 * b6, r6 * b1 + r7 * b4 + r8 * b7, r6 * b2 + r7 * b5 + r8 * b8,
                 pz + r6 * tx + r7 * ty + r8 * tz, 0.0, 0.0, 0.0, 1.0)
        return list(np.array(flat).reshape(-1, 4, 4))

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
        ``max_jerk``, ``max_effort``, ``max_effort_rate`` (``has_*_limits: true`` is accepted,
        ``false`` refused). Loosening a limit beyond the robot description is refused: config
        may only make the robot safer. The gains are not re-checked against the tightened
        limits: call :func:`simreal_ros.robot.gains.check_gains` where that matters.
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


#: ``has_<kind>_limits`` switches of the ros2_control convention; only ``true`` is accepted.
_HAS_KEYS = {"has_position_limits", "has_velocity_limits", "has_acceleration_limits", "has_jerk_limits",
             "has_effort_limits", "has_effort_rate_limits"}


def override_value(where: str, key: str, value: Any) -> float | None:
    """Check one ``joint_limits`` entry: ``None`` for an accepted ``has_*`` switch, else the limit as a
    float. Raises :class:`RobotDescriptionError` naming ``where`` (file and joint), the key and the value."""
    if key in _HAS_KEYS:
        if value is not True:
            raise RobotDescriptionError(
                f"{where} key '{key}' = {value!r}: only true is accepted (the robot's limits always apply; "
                "a limit cannot be switched off)")
        return None
    if key not in _OVERRIDE_KEYS:
        raise RobotDescriptionError(f"{where}: unknown key '{key}' (allowed: {sorted(_OVERRIDE_KEYS)} and "
                                    f"{sorted(_HAS_KEYS)})")
    v = as_number(value, f"{where} key '{key}'")
    if key not in ("min_position", "max_position") and v <= 0:
        raise RobotDescriptionError(f"{where} key '{key}' = {v!r}: must be > 0")
    return v


def _apply_overrides(
    limits: JointLimits,
    joint_names: Sequence[str],
    overrides: Mapping[str, Mapping[str, Any]],
    where: str,
) -> JointLimits:
    arrays = {k: np.array(getattr(limits, k)) for k in limits.__dataclass_fields__}
    if not isinstance(overrides, Mapping):
        raise RobotDescriptionError(f"{where}: expected a mapping joint -> {{key: value}}, got {overrides!r}")
    for joint, entries in overrides.items():
        if joint not in joint_names:
            raise RobotDescriptionError(f"{where}: unknown joint '{joint}' (robot joints: {list(joint_names)})")
        if not isinstance(entries, Mapping):
            raise RobotDescriptionError(f"{where}: joint '{joint}': expected a mapping of limits, got {entries!r}")
        i = list(joint_names).index(joint)
        for key, value in entries.items():
            v = override_value(f"{where}: joint '{joint}'", key, value)
            if v is None:
                continue
            field_ = _OVERRIDE_KEYS[key]
            old = arrays[field_][i]
            tighter = v >= old if key == "min_position" else v <= old
            if not tighter:
                raise RobotDescriptionError(
                    f"{where}: joint '{joint}' key '{key}'={v} is looser than the robot description ({old}); "
                    "config may only tighten limits"
                )
            arrays[field_][i] = v
        lo, hi = arrays["position_min"][i], arrays["position_max"][i]
        if not lo < hi:
            raise RobotDescriptionError(f"{where}: joint '{joint}': min_position {lo!r} must be below max_position "
                                        f"{hi!r}")
    return JointLimits(**arrays)
