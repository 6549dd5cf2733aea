"""Turn a policy's raw output into a joint command, the same way in training and deployment.

The Gymnasium env (training) and the executor (deployment) both call these functions, so
the action semantics a policy was trained with are the ones it is run with.
"""

from __future__ import annotations

import numpy as np

from simreal_ros.robot import RobotModel

#: action types a manifest may declare
ACTION_TYPES = ("joint_position_delta", "joint_position", "joint_torque")


def action_to_target(robot: RobotModel, q: np.ndarray, action: np.ndarray, scale: float,
                     clip: float = 1.0) -> np.ndarray:
    """Joint position target for a normalised delta action: ``clip(q + scale*clip(a, ±clip), limits)``."""
    lim = robot.limits
    return np.clip(q + scale * np.clip(action, -clip, clip), lim.position_min, lim.position_max)


def action_to_command(robot: RobotModel, action_type: str, action: np.ndarray, scale: float, clip: float,
                      q: np.ndarray, default_pose: np.ndarray) -> np.ndarray:
    """Command for ``action_type`` (see :data:`ACTION_TYPES`).

    - ``joint_position_delta``: :func:`action_to_target` around the measured ``q``;
    - ``joint_position``: ``clip(default_pose + scale*clip(a), position limits)``;
    - ``joint_torque``: ``clip(scale*clip(a), ±effort limit)`` (N m).
    """
    a = np.clip(np.asarray(action, dtype=float), -clip, clip)
    lim = robot.limits
    if action_type == "joint_position_delta":
        return action_to_target(robot, q, a, scale, clip)
    if action_type == "joint_position":
        return np.clip(default_pose + scale * a, lim.position_min, lim.position_max)
    if action_type == "joint_torque":
        return np.clip(scale * a, -lim.effort, lim.effort)
    raise ValueError(f"action type '{action_type}' is not one of {list(ACTION_TYPES)}")
