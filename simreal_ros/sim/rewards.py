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


#: weight of the reach reward's ``filter_excess`` term (see :func:`reach_reward`)
REACH_FILTER_EXCESS_WEIGHT = 1.0
#: weight of the reach reward's ``action_accel`` term (see :func:`reach_reward`)
REACH_ACTION_ACCEL_WEIGHT = 0.5


def reach_reward(distance: float, is_success: bool, action: np.ndarray, last_action: np.ndarray,
                 joint_velocity: np.ndarray, discarded: np.ndarray | None = None,
                 previous_action: np.ndarray | None = None) -> tuple[float, dict[str, float]]:
    """Reward of one reach step: flange-goal ``distance`` (m) after the step, the step's
    (executed, filtered) ``action`` and the one before, the measured joint velocities after the
    step (rad/s), what the declared action filter ``discarded`` of the proposal (the proposal
    clipped to the action space minus the filtered action; ``None``: nothing) and the action
    before ``last_action`` (``previous_action``; ``None``: the term is 0).

    ``filter_excess`` penalises what the filter discarded: without it the
    size of a proposal beyond the filter's step does not change the return, PPO's mean action drifts
    to bang-bang and the filter turns it into a triangle wave (acceleration clips at the shield).
    ``action_accel`` penalises the action's second difference: the filter bounds the change per
    step (0.25), not its reversal, and a change reversed at full size commands twice the
    acceleration the filter was declared for (0.5 * 0.05 * 20^2 = 10 rad/s^2, over joint 2's 7.5)."""
    d = float(distance)
    action = np.asarray(action, dtype=float)
    excess = 0.0 if discarded is None else float(np.sum(np.asarray(discarded, dtype=float) ** 2))
    accel = 0.0 if previous_action is None else float(np.sum(
        (action - 2.0 * np.asarray(last_action, dtype=float) + np.asarray(previous_action, dtype=float)) ** 2))
    terms = {
        "distance": -d,
        "precision": float(np.exp(-(d / 0.05) ** 2)),
        "success": 1.0 if is_success else 0.0,
        "action_rate": -0.05 * float(np.sum((action - np.asarray(last_action)) ** 2)),
        "joint_vel": -0.005 * float(np.sum(np.asarray(joint_velocity) ** 2)),
        "filter_excess": -REACH_FILTER_EXCESS_WEIGHT * excess,
        "action_accel": -REACH_ACTION_ACCEL_WEIGHT * accel,
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
