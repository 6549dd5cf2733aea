"""Turn a policy's raw output into a joint command, the same way in training and deployment.

The Gymnasium env (training) and the executor (deployment) both call these functions, so
the action semantics a policy was trained with are the ones it is run with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simreal_ros.robot import RobotModel

#: action types a manifest may declare
ACTION_TYPES = ("joint_position_delta", "joint_position", "joint_torque", "tool_planar_delta")

#: the safety shield's ``command_mode`` (:data:`simreal_ros.shield.COMMAND_MODES`) each action type needs:
#: position targets go to a position-mode shield, torques (N m) only to an effort-mode one
COMMAND_MODE = {"joint_position_delta": "position", "joint_position": "position", "joint_torque": "effort",
                "tool_planar_delta": "position"}

#: ``tool_planar_delta``: the tool tip moves by ``scale * a`` (m, x and y) in the manifest's plane
#: (``action.planar``), turned into joint targets by :class:`simreal_ros.robot.planar.PlanarReference`
PLANAR_DIM = 2


def limit_change(action: np.ndarray, last: np.ndarray, max_change: float | None) -> np.ndarray:
    """The declared action filter (manifest ``action.max_change``): ``action`` moved at most
    ``max_change`` per component from ``last`` (the previous filtered action; zeros at the start
    of an episode or engagement). ``None``: ``action`` unchanged. The envs apply it in training
    and the executor on the robot, so a policy is run with the filter it was trained with: the
    command's change per cycle, hence its acceleration, is bounded by construction."""
    if max_change is None:
        return action
    return np.clip(action, last - max_change, last + max_change)


def action_dim(action_type: str, n_joints: int) -> int:
    """Size of a policy's action for ``action_type``."""
    return PLANAR_DIM if action_type == "tool_planar_delta" else n_joints


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

    ``tool_planar_delta`` keeps a reference point between cycles: use a
    :class:`~simreal_ros.robot.planar.PlanarReference` (the executor and the push env do).
    """
    a = np.clip(np.asarray(action, dtype=float), -clip, clip)
    lim = robot.limits
    if action_type == "joint_position_delta":
        return action_to_target(robot, q, a, scale, clip)
    if action_type == "joint_position":
        return np.clip(default_pose + scale * a, lim.position_min, lim.position_max)
    if action_type == "joint_torque":
        return np.clip(scale * a, -lim.effort, lim.effort)
    if action_type == "tool_planar_delta":
        raise ValueError("action type 'tool_planar_delta' needs a PlanarReference (simreal_ros.robot.planar)")
    raise ValueError(f"action type '{action_type}' is not one of {list(ACTION_TYPES)}")


def command_to_action(robot: RobotModel, action_type: str, command: np.ndarray, scale: float, clip: float,
                      q: np.ndarray, default_pose: np.ndarray) -> np.ndarray:
    """The action that :func:`action_to_command` turns into ``command`` (its inverse, where one
    exists): what a recorded sent command was, in a bundle's action space, clipped to ``±clip``.

    - ``joint_position_delta``: ``clip((command - q) / scale)`` around the measured ``q`` the
      step started from;
    - ``joint_position``: ``clip((command - default_pose) / scale)``;
    - ``joint_torque``: ``clip(command / scale)``.

    A command the forward map cannot produce (beyond ``scale*clip``, e.g. a baseline's larger
    step) maps to the nearest action, the clipped one. ``tool_planar_delta``: see
    :func:`planar_command_to_action`.
    """
    c = np.asarray(command, dtype=float)
    if action_type == "joint_position_delta":
        a = (c - np.asarray(q, dtype=float)) / scale
    elif action_type == "joint_position":
        a = (c - np.asarray(default_pose, dtype=float)) / scale
    elif action_type == "joint_torque":
        a = c / scale
    elif action_type == "tool_planar_delta":
        raise ValueError("action type 'tool_planar_delta' is inverted through its plane: planar_command_to_action")
    else:
        raise ValueError(f"action type '{action_type}' is not one of {list(ACTION_TYPES)}")
    return np.clip(a, -clip, clip)


def planar_command_to_action(robot: RobotModel, frame, command: np.ndarray, reference_xy: np.ndarray, scale: float,
                             clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :meth:`~simreal_ros.robot.planar.PlanarReference.step` for a joint ``command``:
    the tool tip the command puts on the plane (FK through ``frame``) minus the reference point it
    moved from (``reference_xy``: the tip of the previous command, or the measured tip when the
    reference starts, as the forward map starts it), over ``scale``, clipped to ``±clip``.

    Returns (action, the command's tip = the next reference point). Exact where the forward map
    neither clipped the reference to the workspace nor to ``max_lead`` (then the action that moved
    the reference that far).
    """
    tip = frame.tip_position(robot, np.asarray(command, dtype=float))[:2]
    a = (tip - np.asarray(reference_xy, dtype=float)[:2]) / scale
    return np.clip(a, -clip, clip), tip


def _planar_reach(robot: RobotModel, frame, max_lead: float, period: float) -> np.ndarray:
    """Most joint motion per period a planar target can ask for: the reference leads the measured
    tip by at most ``max_lead`` (inside the workspace), so at each point of a grid over the
    workspace and for 16 directions, run the executor's own IK step from the arm there and take
    the joint displacement per period."""
    from simreal_ros.robot.planar import PlanarReference, solve_pose_ik

    x0, y0, x1, y1 = frame.workspace
    worst = np.zeros(robot.n_joints)
    q = frame.rest
    for x in np.linspace(x0, x1, 5):
        for y in np.linspace(y0, y1, 5):
            q, _, _ = solve_pose_ik(robot, frame.flange_position((x, y)), frame.rotation, q, rest=frame.rest,
                                    max_iterations=100)
            for a in np.linspace(0, 2 * np.pi, 16, endpoint=False):
                ref = PlanarReference(robot, frame, max_lead)
                target = ref.step(q, 2 * max_lead * np.array([np.cos(a), np.sin(a)]))
                worst = np.maximum(worst, np.abs(target - q))
    return worst / period


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
                  default_pose: np.ndarray, planar=None, max_change: float | None = None) -> list[CommandReach]:
    """What actions of ``action_type`` (clipped to ``clip``, times ``scale``) can command at ``rate_hz``.

    - ``joint_position_delta``: a target up to ``scale*clip`` from the measured position every
      period, i.e. ``scale*clip*rate`` rad/s, against the velocity limits;
    - ``joint_position``: targets anywhere in ``default_pose +- scale*clip`` (within the position
      limits); from one period to the next the target can jump that whole range, i.e.
      ``range*rate`` rad/s, against the velocity limits;
    - ``joint_torque``: ``scale*clip`` N m against the effort limits (more is clipped: the policy
      would not get what it asks for) and a jump of ``2*min(scale*clip, effort)`` per period
      against the torque-rate limits.

    With a declared action filter (``max_change``) on ``joint_position_delta``, the commanded
    velocity changes by at most ``scale*max_change*rate`` per period: an acceleration of
    ``scale*max_change*rate^2`` rad/s^2, against the acceleration limits. Without one,
    accelerations and jerks are the shield's to shape: any useful step from rest exceeds them
    within one period of a 10-100 Hz policy.
    """
    lim = robot.limits
    step = float(scale) * float(clip)
    period = 1.0 / float(rate_hz)
    if action_type == "joint_position_delta":
        per = np.minimum(step, lim.position_max - lim.position_min)
        out = [CommandReach("velocity", "rad/s", per / period, lim.velocity,
                            f"a target up to scale*clip = {step:g} rad (at most the joint's range) from the "
                            f"measured position every {period:g} s period")]
        if max_change is not None:
            acc = np.full(robot.n_joints, float(scale) * min(float(max_change), 2 * float(clip)) / period**2)
            out.append(CommandReach("acceleration", "rad/s^2", acc, lim.acceleration,
                                    f"the declared action filter max_change = {max_change:g}: the target's step "
                                    f"changes by at most scale*max_change = {float(scale) * max_change:g} rad per "
                                    f"{period:g} s period"))
        return out
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
    if action_type == "tool_planar_delta":
        if planar is None:
            raise ValueError("action type 'tool_planar_delta' needs the manifest's action.planar frame")
        frame, max_lead = planar
        per = _planar_reach(robot, frame, max_lead, period)
        return [CommandReach("velocity", "rad/s", per, lim.velocity,
                             f"a tool target up to max_lead = {max_lead:g} m from the measured tip every "
                             f"{period:g} s period, through the executor's IK over a grid of the workspace")]
    raise ValueError(f"action type '{action_type}' is not one of {list(ACTION_TYPES)}")
