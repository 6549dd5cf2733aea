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


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of :class:`BaselineController` (``config/baseline.yaml`` holds the node's copy).

    Attributes:
        rate_hz: control rate; commands are one period apart.
        velocity_scale / acceleration_scale / jerk_scale: fraction (0, 1] of the robot's limits.
        ik_damping: DLS damping (m). ik_posture_gain: null-space pull to the ready pose.
        ik_iterations: IK iterations per control period (warm-started).
        position_margin: stay this far (rad) inside the position limits.
        integral_gain: rate (1/s) at which the reference integrates the measured Cartesian error.
        integral_limit: bound (m) on the accumulated correction.
        integral_speed: integrate only while the commanded joint speed is below this (rad/s)
        integral_window: ... and the commanded targets are within this (rad) of the IK solution
            (the interpolation has arrived), so the correction never winds up during a move.
    """

    rate_hz: float = 20.0
    velocity_scale: float = 0.5
    acceleration_scale: float = 0.4
    jerk_scale: float = 0.1
    ik_damping: float = 0.05
    ik_posture_gain: float = 0.2
    ik_iterations: int = 30
    position_margin: float = 0.05
    integral_gain: float = 2.0
    integral_limit: float = 0.05
    integral_speed: float = 0.05
    integral_window: float = 0.02

    def __post_init__(self) -> None:
        def check(name: str, low: float, high: float, low_open: bool = True) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > low if low_open else v >= low) and v <= high
            if not ok:
                bracket = "(" if low_open else "["
                raise ValueError(f"baseline config '{name}' = {v!r}: allowed {bracket}{low:g}, {high:g}]")

        check("rate_hz", 0.0, 1000.0)
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale"):
            check(name, 0.0, 1.0)
        check("ik_damping", 0.0, 1.0, low_open=False)
        check("ik_posture_gain", 0.0, 1.0, low_open=False)
        check("ik_iterations", 0, 1000)
        check("position_margin", 0.0, 0.5, low_open=False)
        check("integral_gain", 0.0, 100.0, low_open=False)
        check("integral_limit", 0.0, 1.0, low_open=False)
        check("integral_speed", 0.0, 10.0)
        check("integral_window", 0.0, 1.0)

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
