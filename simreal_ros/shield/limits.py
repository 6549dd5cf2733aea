"""Limits as the shield enforces them, and an independent checker for recorded commands.

Every number comes from the :class:`~simreal_ros.robot.RobotModel` (URDF + joint_limits
YAML); the shield only *tightens* them (position margin). No ROS imports.

Definitions shared by the filter and :func:`check_limits` (so that a recorded stream can be
re-checked with exactly the semantics the shield guarantees):

* The commanded motion is the sequence of sent targets ``q_k`` at times ``t_k``. Its
  velocity, acceleration and jerk are backward differences with the real time steps:
  ``v_k = (q_k - q_{k-1}) / dt_k``, ``a_k = (v_k - v_{k-1}) / dt_k``,
  ``j_k = (a_k - a_{k-1}) / dt_k``.
* A step shorter than ``min_step`` (or a clock going backwards) does not advance the
  motion: the command must be repeated unchanged.
* After a gap longer than ``max_step_gap`` the motion restarts from rest (the previous
  target was held during the gap, so the held target *was* at rest).
* In position mode the torque is the one the impedance controller would apply for the
  target at the measured state: ``tau = K (q_target - q) - D dq``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from simreal_ros.robot import RobotModel

#: Intervention / violation kinds, in the shield's priority order (most important first).
KINDS = ("position", "velocity", "acceleration", "jerk", "tracking", "effort", "effort_rate", "cartesian", "invalid")


@dataclass(frozen=True)
class ShieldLimits:
    """Per-joint limit arrays (robot joint order) as the filter uses them.

    Attributes:
        q_lo, q_hi: position limits tightened by the margin (rad).
        v, a, j: velocity, acceleration, jerk limits of the commanded motion (the velocity
            limit scaled by ``velocity_scale``: room for the arm's controller to overshoot).
        tau, dtau: torque and torque-rate limits.
        a_brake: deceleration planned for braking distances (<= ``a``, and small enough
            that braking never overshoots past ``-v`` within one ``max_step_gap`` step).
        h: ``max_step_gap`` (s): the longest step the motion is defined over.
    """

    q_lo: np.ndarray
    q_hi: np.ndarray
    v: np.ndarray
    a: np.ndarray
    j: np.ndarray
    tau: np.ndarray
    dtau: np.ndarray
    a_brake: np.ndarray
    h: float

    @classmethod
    def from_robot(cls, robot: RobotModel, position_margin: float = 0.0, max_step_gap: float = 0.1,
                   velocity_scale: float = 1.0) -> ShieldLimits:
        lim = robot.limits
        if not (math.isfinite(velocity_scale) and 0.0 < velocity_scale <= 1.0):
            raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale}")
        if not (math.isfinite(position_margin) and position_margin >= 0):
            raise ValueError(f"position_margin must be finite and >= 0, got {position_margin}")
        q_lo = lim.position_min + position_margin
        q_hi = lim.position_max - position_margin
        if np.any(q_lo >= q_hi):
            bad = [n for n, lo, hi in zip(robot.joint_names, q_lo, q_hi) if lo >= hi]
            raise ValueError(f"position_margin {position_margin} rad leaves no range for joints {bad}")
        if not (math.isfinite(max_step_gap) and max_step_gap > 0):
            raise ValueError(f"max_step_gap must be finite and > 0, got {max_step_gap}")
        v, a, j = lim.velocity * velocity_scale, lim.acceleration.copy(), lim.jerk.copy()
        h = float(max_step_gap)
        # largest b with b*h + b^2/(2j) <= v/2: braking (decel b, then jerk back to 0) from
        # any speed >= 0 never undershoots below -v/2 (keeps the opposite velocity bound).
        b_max = v / (h + np.sqrt(h * h + v / j))
        a_brake = np.minimum(a, b_max)
        return cls(q_lo, q_hi, v, a, j, lim.effort.copy(), lim.effort_rate.copy(), a_brake, h)


def stopping_distance(lim: ShieldLimits, v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Upper bound of the distance travelled in +direction before the joint can be stopped.

    From velocity ``v`` and acceleration ``a`` (backward differences), braking with the
    planned deceleration ``a_brake`` under the jerk limit, for *any* sequence of future
    steps no longer than ``h``: first the acceleration is brought to zero (the speed peaks
    at ``v1 = v + a+^2/(2j)``), then ramped to ``-a_brake`` and held. The bound is
    ``v1 (t_ramp + h) + v1^2 / (2 a_brake)`` (0 when ``v1 <= 0``); the ``h`` term covers the
    sampling of the ramp. For the -direction call it with ``(-v, -a)``.
    """
    ap = np.maximum(a, 0.0)
    v1 = v + ap * ap / (2.0 * lim.j)
    t_ramp = (np.maximum(a, -lim.a_brake) + lim.a_brake) / lim.j
    d = v1 * (t_ramp + lim.h) + v1 * v1 / (2.0 * lim.a_brake)
    return np.where(v1 > 0.0, d, 0.0)


def velocity_viability(lim: ShieldLimits, v: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Acceleration bounds for the next step so that the acceleration can still be brought
    back to zero (jerk-limited) without exceeding the velocity limit: ``v' + a'|a'|/(2j) <= v_max``.

    Solved in closed form (cancellation-free) for ``v' = v + a' dt``.
    """
    j = lim.j
    up = np.maximum(lim.v - v, 0.0)
    dn = np.maximum(lim.v + v, 0.0)
    x_hi = 2.0 * up / (dt + np.sqrt(dt * dt + 2.0 * up / j))
    x_lo = -2.0 * dn / (dt + np.sqrt(dt * dt + 2.0 * dn / j))
    return x_lo, x_hi


# ---------------------------------------------------------------------- offline checker
@dataclass(frozen=True)
class Violation:
    """One sample exceeding one limit (``value`` and ``limit`` in the kind's SI unit)."""

    index: int
    time: float
    joint: str
    kind: str
    value: float
    limit: float


def check_limits(
    robot: RobotModel,
    times: Sequence[float],
    commands: Sequence[Sequence[float]],
    *,
    command_mode: str = "position",
    position_margin: float = 0.0,
    states: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None,
    stiffness: Sequence[float] | None = None,
    damping: Sequence[float] | None = None,
    max_step_gap: float = 0.1,
    min_step: float = 1e-4,
    rtol: float = 1e-6,
    starts_at_rest: bool = False,
    time_resolution: float = 0.0,
) -> list[Violation]:
    """Check a sequence of sent commands against every limit kind of ``robot``.

    Args:
        robot: the robot model whose limits apply.
        times: send time of each command (s, one clock, e.g. the shield's monotonic clock
            or the bag's receive time).
        commands: one row per sample, robot joint order.
        command_mode: ``position`` (targets: position, velocity, acceleration, jerk; plus
            torque and torque rate when ``states`` is given) or ``effort`` (torques).
        position_margin: margin inside the robot's position limits that must be kept.
        states: optional ``(q, dq)`` measured when each command was computed (None where
            unknown); enables the impedance-torque check in position mode (needs
            ``stiffness`` and ``damping``, by default the robot description's gains).
        max_step_gap, min_step: see the module docstring; use the shield's values (the
            defaults are the node's and ShieldConfig's defaults). Checking with a smaller
            ``max_step_gap`` than the shield used reports false violations after "gaps".
        rtol: relative tolerance for floating-point rounding.
        time_resolution: resolution of ``times`` (s): 1e-9 for ROS stamps (integer ns). A time
            off by that much displaces a sample by ``|v| * time_resolution``, which the
            derivatives are allowed as rounding (it matters at steps well below a millisecond,
            e.g. a command arriving just after the shield's timer step).
        starts_at_rest: the first sample is the shield's first command (it starts at rest),
            so acceleration and jerk are checked from the second sample on. Otherwise (a
            recording that may start mid-motion) they are checked once enough samples exist
            to compute them.

    Returns:
        Every violation found (empty list: the sequence is within all limits).
    """
    if command_mode not in ("position", "effort"):
        raise ValueError(f"command_mode must be 'position' or 'effort', got {command_mode!r}")
    for name, value in (("position_margin", position_margin), ("max_step_gap", max_step_gap),
                        ("min_step", min_step), ("rtol", rtol), ("time_resolution", time_resolution)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"check_limits {name} must be finite and >= 0, got {value!r} "
                             "(a NaN or negative one would silently weaken the check)")
    names = robot.joint_names
    n = robot.n_joints
    lim = robot.limits
    t_in = np.asarray(times)  # differences in the times' own precision (longdouble ROS stamps, see
    t = np.asarray(t_in - t_in[0], dtype=float) if len(t_in) else np.zeros(0)  # bag.check.stamped_commands)
    q = np.asarray(commands, dtype=float).reshape(len(t), -1) if len(t) else np.zeros((0, n))
    if q.shape[1] != n:
        raise ValueError(f"commands must have {n} columns, got {q.shape[1]}")
    out: list[Violation] = []

    def flag(k: int, kind: str, values: np.ndarray, bound: np.ndarray, slack: np.ndarray | float = 0.0) -> None:
        bad = ~(np.abs(values) <= bound * (1 + rtol) + slack)
        for i in np.flatnonzero(bad):
            out.append(Violation(k, float(t_in[k]), names[i], kind, float(values[i]), float(bound[i])))

    if command_mode == "position" and states is not None:
        K = np.asarray(robot.gains.stiffness if stiffness is None else stiffness, dtype=float)
        D = np.asarray(robot.gains.damping if damping is None else damping, dtype=float)
    prev = None  # (index, q, v, a, tau)
    for k in range(len(t)):
        x = q[k]
        if not np.all(np.isfinite(x)):
            for i in np.flatnonzero(~np.isfinite(x)):
                out.append(Violation(k, float(t_in[k]), names[i], "invalid", float(x[i]), math.nan))
            continue
        tau = None
        if command_mode == "position":
            lo, hi = lim.position_min + position_margin, lim.position_max - position_margin
            tol = rtol * np.maximum(np.abs(lo), np.abs(hi))
            for i in np.flatnonzero((x < lo - tol) | (x > hi + tol)):
                out.append(Violation(k, float(t_in[k]), names[i], "position", float(x[i]),
                                     float(lo[i] if x[i] < lo[i] else hi[i])))
            if states is not None and states[k] is not None:
                qm, dqm = (np.asarray(s, dtype=float) for s in states[k])
                tau = K * (x - qm) - D * dqm
                flag(k, "effort", tau, lim.effort)
        else:
            tau = x
            flag(k, "effort", tau, lim.effort)
        if prev is None:
            prev = (k, x, np.zeros(n), np.zeros(n), tau)
            tvp = tap = np.zeros(n)  # error bounds of prev's v and a from the times' resolution
            known = 2 if starts_at_rest else 0  # how many derivatives of prev come from data
            continue
        dt = t[k] - t[prev[0]]
        if not dt >= min_step:
            if not np.array_equal(x, prev[1]):
                for i in np.flatnonzero(x != prev[1]):
                    out.append(Violation(k, float(t_in[k]), names[i], "invalid", float(x[i]), float(prev[1][i])))
            continue
        _, xp, vp, ap, taup = prev
        if dt > max_step_gap:  # the shield restarts from rest after a gap
            vp, ap = np.zeros(n), np.zeros(n)
            tvp = tap = np.zeros(n)
            known = 2
        if command_mode == "position":
            # rounding of the differences grows like eps * |q| / dt^order
            eps = 8 * np.finfo(float).eps * np.maximum(np.abs(x), 1.0)
            v = (x - xp) / dt
            a = (v - vp) / dt
            jk = (a - ap) / dt
            # each time may be off by time_resolution: the error of a difference quotient is the
            # errors of its terms over dt plus its own value x 2 resolution / dt (carried along)
            rel = 2 * time_resolution / dt
            tv = np.abs(v) * rel
            ta = (tv + tvp) / dt + np.abs(a) * rel
            tj = (ta + tap) / dt + np.abs(jk) * rel
            flag(k, "velocity", v, lim.velocity, eps / dt + tv)
            if known >= 1:
                flag(k, "acceleration", a, lim.acceleration, 2 * eps / dt**2 + ta)
            if known >= 2:
                flag(k, "jerk", jk, lim.jerk, 4 * eps / dt**3 + tj)
            known = min(known + 1, 2)
            tvp, tap = tv, ta
        else:
            v = a = np.zeros(n)
        if tau is not None and taup is not None:
            eps_t = 8 * np.finfo(float).eps * np.maximum(np.abs(tau), 1.0)
            flag(k, "effort_rate", (tau - taup) / dt, lim.effort_rate, eps_t / dt)
        prev = (k, x, v, a, tau)
    return out
