"""The arm controller's joint impedance gains, part of the robot description.

The arm's position interface is a joint impedance controller,
``tau = K (q_target - q) - D dq`` (plus gravity compensation), so the gains decide which
torques a position target produces: the simulated arm runs with them and the safety shield's
torque check predicts with them. They live once, in ``config/<robot>_impedance.yaml``, and
loading checks them against the joint limits:

* stiffness at least :data:`STIFFNESS_MIN` (a near-zero stiffness makes every target produce
  almost no torque, so a torque check that predicts ``K (target - q)`` sees nothing while the
  damping and the arm's motion still produce large torques) and at most :data:`STIFFNESS_MAX`;
* damping >= 0;
* ``damping * velocity limit <= effort limit``: holding the measured position from full speed
  (what a brake does) must be possible within the torque limit. Franka's example gains
  (D = 50 on joints 1-4) need 108.75 N m there against 87 N m.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from simreal_ros.robot.errors import RobotDescriptionError, as_number
from simreal_ros.robot.strict_yaml import load_section

#: N m/rad; below this a target hardly acts on the arm (see the module docstring).
STIFFNESS_MIN = 1.0
#: N m/rad; far above what a 1 kHz joint impedance controller renders stably on this arm class.
STIFFNESS_MAX = 1.0e4
GAIN_KEYS = ("stiffness", "damping")


def _ro(values: Sequence[float]) -> np.ndarray:
    """A read-only float copy (the description's arrays cannot be changed in place)."""
    arr = np.array(values, dtype=float)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class ImpedanceGains:
    """Joint impedance gains in the robot's joint order (read-only float arrays).

    Attributes:
        stiffness: K per joint (N m/rad).
        damping: D per joint (N m s/rad).
    """

    stiffness: np.ndarray
    damping: np.ndarray

    def __post_init__(self) -> None:
        for name in GAIN_KEYS:
            arr = _ro(getattr(self, name))
            if arr.ndim != 1 or not np.all(np.isfinite(arr)):
                raise RobotDescriptionError(f"ImpedanceGains.{name}: need one finite value per joint, got {arr}")
            object.__setattr__(self, name, arr)
        if self.stiffness.shape != self.damping.shape:
            raise RobotDescriptionError(f"ImpedanceGains: {len(self.stiffness)} stiffness values but "
                                        f"{len(self.damping)} damping values")


def check_gains(gains: ImpedanceGains, velocity: np.ndarray, effort: np.ndarray, joint_names: Sequence[str],
                where: str) -> None:
    """Raise :class:`RobotDescriptionError` unless ``gains`` are plausible and consistent with the
    velocity and effort limits (see the module docstring); the message names ``where`` (the
    file), the joint and both values."""
    if len(gains.stiffness) != len(joint_names):
        raise RobotDescriptionError(f"{where}: {len(gains.stiffness)} gains for {len(joint_names)} joints")
    for i, jn in enumerate(joint_names):
        k, d, v, e = (float(x[i]) for x in (gains.stiffness, gains.damping, velocity, effort))
        if not STIFFNESS_MIN <= k <= STIFFNESS_MAX:
            why = ("a target would hardly act on the arm, and a torque check that predicts stiffness x error would "
                   "not see the torques the motion makes" if k < STIFFNESS_MIN else "not a plausible joint impedance")
            raise RobotDescriptionError(f"{where}: joint '{jn}' stiffness = {k!r} N m/rad is outside "
                                        f"[{STIFFNESS_MIN:g}, {STIFFNESS_MAX:g}]: {why}")
        if d < 0:
            raise RobotDescriptionError(f"{where}: joint '{jn}' damping = {d!r} N m s/rad must be >= 0")
        if d * v > e:
            raise RobotDescriptionError(
                f"{where}: joint '{jn}' damping = {d!r} N m s/rad x velocity limit {v!r} rad/s = {d * v:.6g} N m "
                f"exceeds the effort limit {e!r} N m: holding the measured position from full speed would need "
                f"more torque than the joint has (damping must be <= {e / v:.6g})")


def load_gains(path: str | Path, joint_names: Sequence[str], velocity: np.ndarray, effort: np.ndarray) -> \
        ImpedanceGains:
    """Read ``impedance: {<joint>: {stiffness: K, damping: D}}`` from ``path`` and check it.

    Raises:
        RobotDescriptionError: missing file, malformed YAML, a duplicate/missing/unknown joint or
            key, a value that is not a number, or gains inconsistent with the limits.
    """
    path = Path(path)
    table = load_section(path, "impedance", "impedance gains file")
    unknown = [j for j in table if j not in joint_names]
    if unknown:
        raise RobotDescriptionError(f"{path}: impedance: unknown joint(s) {unknown} (robot joints: {list(joint_names)})")
    K, D = [], []
    for jn in joint_names:
        entry = table.get(jn)
        if not isinstance(entry, dict) or set(entry) != set(GAIN_KEYS):
            got = sorted(entry) if isinstance(entry, dict) else entry
            raise RobotDescriptionError(f"{path}: impedance/{jn}: needs exactly the keys {list(GAIN_KEYS)}, got {got!r}")
        K.append(as_number(entry["stiffness"], f"{path}: impedance/{jn}/stiffness"))
        D.append(as_number(entry["damping"], f"{path}: impedance/{jn}/damping"))
    gains = ImpedanceGains(stiffness=K, damping=D)
    check_gains(gains, velocity, effort, joint_names, str(path))
    return gains
