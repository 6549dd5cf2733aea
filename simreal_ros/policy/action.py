"""Turn a policy's raw output into a joint command, the same way in training and deployment.

The Gymnasium env (training) and the executor (deployment) both call these functions, so
the action semantics a policy was trained with are the ones it is run with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simreal_ros.robot import RobotModel

#: action types a manifest may declare
ACTION_TYPES = ("joint_position_delta", "joint_position", "joint_torque")

#: the safety shield's ``command_mode`` (:data:`simreal_ros.shield.COMMAND_MODES`) each action type needs:
#: position targets go to a position-mode shield, torques (N m) only to an effort-mode one
COMMAND_MODE = {"joint_position_delta": "position", "joint_position": "position", "joint_torque": "effort"}


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


@dataclass(frozen=True)
class CommandReach:
    """The most a bundle's actions can command, per joint, in one quantity, beside the robot's limit.

    Attributes:
        quantity: ``velocity`` (rad/s), ``effort`` (N m) or ``effort_rate`` (N m/s): the limit kind.
        unit: its unit.
        allowed: per joint, the most any sequence of actions can command.
        limit: per joint, the robot's limit of that kind.
        basis: how ``allowed`` follows from the manifest (for reports).
    """

    quantity: str
    unit: str
    allowed: np.ndarray
    limit: np.ndarray
    basis: str

    @property
    def over(self) -> np.ndarray:
        """Indices of the joints whose ``allowed`` exceeds the limit."""
        return np.flatnonzero(self.allowed > self.limit * (1 + 1e-9))


def command_reach(robot: RobotModel, action_type: str, scale: float, clip: float, rate_hz: float,
                  default_pose: np.ndarray) -> list[CommandReach]:
    """What actions of ``action_type`` (clipped to ``clip``, times ``scale``) can command at ``rate_hz``.

    - ``joint_position_delta``: a target up to ``scale*clip`` from the measured position every
      period, i.e. ``scale*clip*rate`` rad/s, against the velocity limits;
    - ``joint_position``: targets anywhere in ``default_pose +- scale*clip`` (within the position
      limits); from one period to the next the target can jump that whole range, i.e.
      ``range*rate`` rad/s, against the velocity limits;
    - ``joint_torque``: ``scale*clip`` N m against the effort limits (more is clipped: the policy
      would not get what it asks for) and a jump of ``2*min(scale*clip, effort)`` per period
      against the torque-rate limits.

    Accelerations and jerks are the shield's to shape: any useful step from rest exceeds them
    within one period of a 10-100 Hz policy.
    """
    lim = robot.limits
    step = float(scale) * float(clip)
    period = 1.0 / float(rate_hz)
    if action_type == "joint_position_delta":
        per = np.minimum(step, lim.position_max - lim.position_min)
        return [CommandReach("velocity", "rad/s", per / period, lim.velocity,
                             f"a target up to scale*clip = {step:g} rad (at most the joint's range) from the "
                             f"measured position every {period:g} s period")]
    if action_type == "joint_position":
        pose = np.asarray(default_pose, dtype=float)
        lo = np.clip(pose - step, lim.position_min, lim.position_max)
        hi = np.clip(pose + step, lim.position_min, lim.position_max)
        return [CommandReach("velocity", "rad/s", (hi - lo) / period, lim.velocity,
                             f"targets anywhere in default_pose +- scale*clip = {step:g} rad, a jump of up to that "
                             f"range from one {period:g} s period to the next")]
    if action_type == "joint_torque":
        return [CommandReach("effort", "N m", np.full(robot.n_joints, step), lim.effort,
                             f"torques up to scale*clip = {step:g} N m"),
                CommandReach("effort_rate", "N m/s", 2.0 * np.minimum(step, lim.effort) / period, lim.effort_rate,
                             f"a torque jump of up to 2*min(scale*clip, effort limit) from one {period:g} s period "
                             "to the next")]
    raise ValueError(f"action type '{action_type}' is not one of {list(ACTION_TYPES)}")
