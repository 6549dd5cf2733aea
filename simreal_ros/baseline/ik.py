"""Damped-least-squares inverse kinematics for the flange position (ROS-free, pure numpy).

Position-only IK on a 7-joint arm leaves four redundant degrees of freedom; they are spent
on staying close to a rest posture (the ready pose) through a null-space term, which keeps
solutions away from joint limits and repeatable from one goal to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simreal_ros.robot import RobotModel


@dataclass(frozen=True)
class IKResult:
    """Outcome of :func:`solve_position_ik`."""

    q: np.ndarray  # joint solution, inside the (margin-shrunk) position limits
    error: float  # remaining flange position error (m)
    iterations: int
    converged: bool


def dls_step(robot: RobotModel, q: np.ndarray, target: np.ndarray, damping: float, rest: np.ndarray,
             posture_gain: float, max_step: float) -> tuple[np.ndarray, float]:
    """One damped-least-squares step toward ``target``; returns (joint step, current error norm).

    ``dq = J^T (J J^T + damping^2 I)^-1 e + (I - J^+ J) posture_gain (rest - q)``, scaled down
    so that no joint moves more than ``max_step`` rad.
    """
    T = robot.link_transforms(q)
    e = target - T[-1][:3, 3]
    J = _position_jacobian(robot, T)
    JJt = J @ J.T
    lam2 = damping * damping
    dq = J.T @ np.linalg.solve(JJt + lam2 * np.eye(3), e)
    if posture_gain > 0:
        J_pinv = J.T @ np.linalg.inv(JJt + 1e-9 * np.eye(3))
        null = np.eye(robot.n_joints) - J_pinv @ J
        dq = dq + null @ (posture_gain * (rest - q))
    biggest = float(np.max(np.abs(dq)))
    if biggest > max_step:
        dq = dq * (max_step / biggest)
    return dq, float(np.linalg.norm(e))


def _position_jacobian(robot: RobotModel, T: list[np.ndarray]) -> np.ndarray:
    p_e = T[-1][:3, 3]
    J = np.empty((3, robot.n_joints))
    for i, (joint, Ti) in enumerate(zip(robot.joints, T[:-1])):
        J[:, i] = np.cross(Ti[:3, :3] @ joint.axis, p_e - Ti[:3, 3])
    return J


def solve_position_ik(robot: RobotModel, target: np.ndarray, q0: np.ndarray, *, damping: float = 0.05,
                      posture_gain: float = 0.2, rest: np.ndarray | None = None, margin: float = 0.05,
                      tolerance: float = 1e-4, max_iterations: int = 100, max_step: float = 0.2) -> IKResult:
    """Joint configuration whose flange is at ``target`` (base frame, m), starting from ``q0``.

    Every iterate is clipped to the position limits shrunk by ``margin`` (rad), so the result
    is always a configuration the robot may take. When ``target`` is out of reach the result
    is the closest configuration found, with ``converged=False``.
    """
    target = np.asarray(target, dtype=float)
    if target.shape != (3,) or not np.all(np.isfinite(target)):
        raise ValueError(f"IK target must be 3 finite numbers (m), got {target!r}")
    lim = robot.limits
    lo, hi = lim.position_min + margin, lim.position_max - margin
    q = np.clip(np.asarray(q0, dtype=float), lo, hi)
    rest = robot.ready_pose if rest is None else np.asarray(rest, dtype=float)
    err = np.inf
    for it in range(1, max_iterations + 1):
        dq, err = dls_step(robot, q, target, damping, rest, posture_gain, max_step)
        if err < tolerance:
            return IKResult(q, err, it - 1, True)
        q = np.clip(q + dq, lo, hi)
    err = float(np.linalg.norm(target - robot.fk(q)[:3, 3]))
    return IKResult(q, err, max_iterations, err < tolerance)
