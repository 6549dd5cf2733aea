"""The classical reaching controller: DLS inverse kinematics + jerk-limited joint interpolation.

This is the fallback the safety shield executes in ``shadow`` mode, blends from in ``blend``
mode and reverts to on a monitor trip, and what ``simreal evaluate`` compares policies with.
ROS-free; the node (``simreal_ros.nodes.baseline_node``) only feeds it messages.

Each control period (:meth:`BaselineController.step`):

1. **Goal in joint space.** Damped-least-squares IK of the reference point, warm-started
   from the previous solution, with a null-space pull to the ready pose.
2. **Closed loop on the measured flange.** Once the interpolated motion has (nearly) come to
   rest, the reference point integrates the remaining Cartesian error between the goal and
   FK of the *measured* joints (bounded), which removes the steady-state offset left by an
   unmodelled payload or joint friction under impedance control.
3. **Interpolation.** Ruckig (time-optimal online trajectory generation) moves the commanded
   joint targets toward the IK solution within fractions of the robot's velocity,
   acceleration and jerk limits, time-synchronised over joints (a straight line in joint
   space). Commands are finally clipped to the position limits less a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from ruckig import ControlInterface, InputParameter, OutputParameter, Result, Ruckig

from simreal_ros.baseline.ik import solve_position_ik
from simreal_ros.configs import from_mapping as config_from_mapping
from simreal_ros.robot import RobotModel
from simreal_ros.settings import setting, validate_fields


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of :class:`BaselineController` and its node; each field declares its bounds and
    meaning once (the node's parameters and ``config/baseline.yaml``'s check derive from them).

    The integral correction runs only while the commanded joint speed is below
    ``integral_speed`` and the targets are within ``integral_window`` of the IK solution (the
    interpolation has arrived), so it never winds up during a move. ``max_state_age`` and
    ``follow_tolerance`` are applied by the node (which state is used, when another
    controller is in command).
    """

    rate_hz: float = setting(20.0, "control rate: commands are one period apart; the graph sets the policy "
                             "manifest's rate (the shield's period)", unit="Hz", low=1.0, high=1000.0)
    velocity_scale: float = setting(0.5, "fraction of the robot's velocity limits", low=0.01, high=1.0)
    acceleration_scale: float = setting(0.4, "fraction of the robot's acceleration limits", low=0.01, high=1.0)
    jerk_scale: float = setting(0.1, "fraction of the robot's jerk limits", low=0.001, high=1.0)
    ik_damping: float = setting(0.05, "damped-least-squares damping", unit="m", low=0.0, high=1.0)
    ik_posture_gain: float = setting(0.2, "null-space pull to the ready pose", low=0.0, high=1.0)
    ik_iterations: int = setting(30, "IK iterations per control period (warm-started)", low=1, high=1000)
    position_margin: float = setting(0.05, "kept inside the position limits", unit="rad", low=0.0, high=0.5)
    integral_gain: float = setting(2.0, "rate at which the reference integrates the measured Cartesian error of "
                                   "the flange (closed loop, once the interpolation has arrived)", unit="1/s",
                                   low=0.0, high=100.0)
    integral_limit: float = setting(0.05, "bound of the accumulated correction", unit="m", low=0.0, high=1.0)
    integral_speed: float = setting(0.05, "integrate only while the commanded joint speed is below this",
                                    unit="rad/s", low=0.0, low_open=True, high=10.0)
    integral_window: float = setting(0.02, "... and the commanded targets are within this of the IK solution",
                                     unit="rad", low=0.0, low_open=True, high=1.0)
    max_state_age: float = setting(0.1, "an older state is not used for the closed-loop correction", unit="s",
                                   low=0.001, high=10.0)
    follow_tolerance: float = setting(1e-6, "a sent command further than this from our proposals means another "
                                      "controller is in command: follow it (bumpless take-over)", unit="rad",
                                      low=0.0, high=1.0)

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BaselineConfig:
        """Build from a mapping (e.g. node parameters); unknown keys are refused by name."""
        return config_from_mapping(cls, values, "baseline config")


class BaselineController:
    """Reach a goal point with the flange; one joint-target command per :meth:`step`.

    Args:
        robot: robot model; every limit comes from it.
        config: see :class:`BaselineConfig`.

    Usage::

        ctl = BaselineController(robot)
        ctl.reset(q_measured)
        ctl.set_goal([0.5, 0.0, 0.4])
        target = ctl.step(q_measured)      # every 1/rate_hz seconds
    """

    def __init__(self, robot: RobotModel, config: BaselineConfig | None = None) -> None:
        self.robot = robot
        self.config = config or BaselineConfig()
        c, lim, n = self.config, robot.limits, robot.n_joints
        self.dt = 1.0 / c.rate_hz
        self._lo = lim.position_min + c.position_margin
        self._hi = lim.position_max - c.position_margin
        self._otg = Ruckig(n, self.dt)
        self._inp = InputParameter(n)
        self._out = OutputParameter(n)
        self._inp.max_velocity = (lim.velocity * c.velocity_scale).tolist()
        self._inp.max_acceleration = (lim.acceleration * c.acceleration_scale).tolist()
        self._inp.max_jerk = (lim.jerk * c.jerk_scale).tolist()
        self.goal: np.ndarray | None = None
        self.q_goal: np.ndarray | None = None
        self.offset = np.zeros(3)
        self.ik_error = math.inf
        self._started = False

    # ------------------------------------------------------------------ state
    @property
    def started(self) -> bool:
        """True once :meth:`reset` has set the commanded state."""
        return self._started

    @property
    def command(self) -> np.ndarray:
        """The last commanded joint targets."""
        return np.array(self._inp.current_position)

    @property
    def command_velocity(self) -> np.ndarray:
        return np.array(self._inp.current_velocity)

    def _checked(self, q: Any, what: str) -> np.ndarray:
        arr = np.asarray(q, dtype=float)
        if arr.shape != (self.robot.n_joints,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} must be {self.robot.n_joints} finite joint values, got {q!r}")
        return arr

    def reset(self, q: Any) -> None:
        """Start (or restart) from joint positions ``q`` at rest; keeps the goal, clears the correction."""
        q = np.clip(self._checked(q, "q"), self.robot.limits.position_min, self.robot.limits.position_max)
        n = self.robot.n_joints
        self._inp.current_position = q.tolist()
        self._inp.current_velocity = [0.0] * n
        self._inp.current_acceleration = [0.0] * n
        self._inp.target_velocity = [0.0] * n
        self._inp.target_acceleration = [0.0] * n
        self.offset = np.zeros(3)
        self.q_goal = None
        self._started = True
        if self.goal is not None:
            self._solve(self.goal, q, self.config.ik_iterations * 4)

    def sync(self, q: Any, v: Any | None = None) -> None:
        """Continue from what was actually sent (bumpless take-over).

        While another controller (the policy) is in command, the shield's sent targets are
        fed here so that a revert to this controller starts from the arm's commanded motion
        (position ``q``, velocity ``v``) instead of a stale trajectory of its own.
        """
        q = self._checked(q, "q")
        v = np.zeros_like(q) if v is None else self._checked(v, "v")
        if not self._started:
            self.reset(q)
        self._inp.current_position = q.tolist()
        self._inp.current_velocity = v.tolist()
        self._inp.current_acceleration = [0.0] * self.robot.n_joints

    def set_goal(self, goal: Any) -> None:
        """New flange goal (base frame, m). Takes effect from the next :meth:`step`."""
        goal = np.asarray(goal, dtype=float)
        if goal.shape != (3,) or not np.all(np.isfinite(goal)):
            raise ValueError(f"goal must be 3 finite coordinates (m), got {goal!r}")
        if self.goal is not None and np.allclose(goal, self.goal):
            return
        self.goal = goal.copy()
        self.offset = np.zeros(3)
        if self._started:
            seed = self.q_goal if self.q_goal is not None else self.command
            self._solve(self.goal, seed, self.config.ik_iterations * 4)

    def clear_goal(self) -> None:
        """Forget the goal: the controller brings the arm to rest where it is."""
        self.goal, self.q_goal, self.offset = None, None, np.zeros(3)

    def _solve(self, point: np.ndarray, seed: np.ndarray, iterations: int) -> None:
        c = self.config
        res = solve_position_ik(self.robot, point, seed, damping=c.ik_damping, posture_gain=c.ik_posture_gain,
                                margin=c.position_margin, max_iterations=max(1, iterations))
        self.q_goal, self.ik_error = res.q, res.error

    # ------------------------------------------------------------------ control
    def step(self, q_measured: Any | None = None) -> np.ndarray:
        """Next joint-target command (robot order), one control period after the previous one.

        Args:
            q_measured: measured joint positions; enables the closed-loop correction. Without
                it the controller runs open loop on its own commanded trajectory.
        """
        if not self._started:
            if q_measured is None:
                raise RuntimeError("BaselineController.step before reset(q): no commanded state yet")
            self.reset(q_measured)
        c = self.config
        if self.goal is not None:
            if q_measured is not None:
                q_meas = self._checked(q_measured, "q_measured")
                speed = float(np.max(np.abs(self._inp.current_velocity)))
                arrived = (self.q_goal is not None
                           and float(np.max(np.abs(self.command - self.q_goal))) < c.integral_window)
                if c.integral_gain > 0 and arrived and speed < c.integral_speed:
                    err = self.goal - self.robot.fk(q_meas)[:3, 3]
                    self.offset = self.offset + c.integral_gain * self.dt * err
                    norm = float(np.linalg.norm(self.offset))
                    if norm > c.integral_limit:
                        self.offset *= c.integral_limit / norm
            seed = self.q_goal if self.q_goal is not None else self.command
            self._solve(self.goal + self.offset, seed, c.ik_iterations)
            target = self.q_goal
            self._inp.control_interface = ControlInterface.Position
            self._inp.target_position = np.clip(target, self._lo, self._hi).tolist()
        else:  # no goal: brake to rest (velocity interface, target velocity 0) and hold there
            self._inp.control_interface = ControlInterface.Velocity
        result = self._otg.update(self._inp, self._out)
        if result not in (Result.Working, Result.Finished):
            raise RuntimeError(f"ruckig trajectory generation failed: {result}")
        self._out.pass_to_input(self._inp)
        cmd = np.clip(np.asarray(self._out.new_position), self.robot.limits.position_min,
                      self.robot.limits.position_max)
        return cmd

    def distance(self, q: Any) -> float:
        """Distance (m) between the goal and the flange at ``q`` (inf without a goal)."""
        if self.goal is None:
            return math.inf
        return float(np.linalg.norm(self.goal - self.robot.fk(self._checked(q, "q"))[:3, 3]))
