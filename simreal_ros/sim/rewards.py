"""The tasks' reward functions, declared once (ROS-free, numpy).

The Gymnasium envs (:class:`~simreal_ros.sim.env.ReachEnv`, :class:`~simreal_ros.sim.push_env.PushEnv`)
and the dataset builder (:mod:`simreal_ros.dataset.build`, rewards of recorded sessions) both
call these, so a dataset's rewards are the ones the policy was trained on. Each returns the
reward and its terms (summed in the order listed).
"""

from __future__ import annotations

import numpy as np

#: the reach task's success (the ReachEnv's defaults): flange within this distance of the goal (m) ...
REACH_SUCCESS_RADIUS = 0.02
#: ... and slower than this (m/s)
REACH_SUCCESS_SPEED = 0.05


def reach_success(distance: float, speed: float, success_radius: float, success_speed: float) -> bool:
    """The reach task's success: the flange within ``success_radius`` (m) of the goal, slower than
    ``success_speed`` (m/s)."""
    return bool(distance < success_radius and speed < success_speed)


def reach_reward(distance: float, is_success: bool, action: np.ndarray, last_action: np.ndarray,
                 joint_velocity: np.ndarray) -> tuple[float, dict[str, float]]:
    """Reward of one reach step: flange-goal ``distance`` (m) after the step, the step's
    ``action`` and the one before, the measured joint velocities after the step (rad/s)."""
    d = float(distance)
    terms = {
        "distance": -d,
        "precision": float(np.exp(-(d / 0.05) ** 2)),
        "success": 1.0 if is_success else 0.0,
        "action_rate": -0.05 * float(np.sum((np.asarray(action) - np.asarray(last_action)) ** 2)),
        "joint_vel": -0.005 * float(np.sum(np.asarray(joint_velocity) ** 2)),
    }
    return float(sum(terms.values())), terms


def push_success(distance: float, speed: float, fell: bool, success_radius: float, success_speed: float) -> bool:
    """The push task's success: the puck on the table, its centre within ``success_radius`` (m) of
    the goal and slower than ``success_speed`` (m/s)."""
    return bool((not fell) and distance < success_radius and speed < success_speed)


def push_reward(distance: float, prev_distance: float, tool_xy: np.ndarray, puck_xy: np.ndarray, is_success: bool,
                action: np.ndarray, last_action: np.ndarray, puck_radius: float,
                tool_radius: float) -> tuple[float, dict[str, float]]:
    """Reward of one push step: puck-goal ``distance`` (m) after the step and before it, the tool
    tip and puck centre in the table plane after it, the step's ``action`` and the one before,
    the puck's and the tool's radii (m)."""
    d = float(distance)
    gap = float(np.linalg.norm(np.asarray(puck_xy)[:2] - np.asarray(tool_xy)[:2]))
    terms = {
        "puck_goal": -2.0 * d,
        "progress": 10.0 * (float(prev_distance) - d),
        "tool_puck": -0.5 * max(0.0, gap - puck_radius - tool_radius),
        "success": 10.0 if is_success else 0.0,
        "action_rate": -0.1 * float(np.sum((np.asarray(action) - np.asarray(last_action)) ** 2)),
    }
    return float(sum(terms.values())), terms
