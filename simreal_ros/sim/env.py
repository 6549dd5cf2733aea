"""Gymnasium reaching task on the simulated arm (registered as ``SimReal/Reach-v0``).

The agent sees measured joint state (noise, latency and drops included when randomized)
and commands joint-position deltas that the impedance controller tracks, exactly the
interface the policy executor gives it on the robot. Success: the flange within
``success_radius`` of the goal and slower than ``success_speed``.

Besides the Gymnasium API, evaluation code drives the env with joint targets of its own (the
safety shield's output): :attr:`ReachEnv.measurement` is what a controller sees,
:meth:`ReachEnv.advance` sends a target and runs one control period, :meth:`ReachEnv.status`
says how far the flange is from the goal.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from simreal_ros.policy.action import action_to_target, limit_change
from simreal_ros.policy.observation import DEFAULT_TERMS, ObsInputs, build_observation, term_sizes
from simreal_ros.robot import RobotModel
from simreal_ros.sim.arm import MEASUREMENT_PERIOD, PHYSICS_DT, ArmSim, ArmSimConfig, Measurement, SceneCamera, ticks
from simreal_ros.sim.randomize import RandomizationRanges, load_ranges
from simreal_ros.sim.rewards import REACH_SUCCESS_RADIUS, REACH_SUCCESS_SPEED, reach_reward, reach_success

#: spread (rad) around the ready pose of the joint configurations whose FK gives goals
GOAL_SPREAD = np.array([1.0, 0.45, 0.5, 0.5, 0.5, 0.45, 0.0])
GOAL_MIN_HEIGHT = 0.2  # m above the base; the table top is at 0.1 m
GOAL_MIN_RADIUS = 0.3  # m from the base axis


def sample_goal(robot: RobotModel, rng: np.random.Generator) -> np.ndarray:
    """A reachable goal: FK of a random configuration near the ready pose, above the table."""
    lim = robot.limits
    for _ in range(1000):
        q = robot.ready_pose + rng.uniform(-1.0, 1.0, robot.n_joints) * GOAL_SPREAD
        q = np.clip(q, lim.position_min + 0.1, lim.position_max - 0.1)
        p = robot.fk(q)[:3, 3]
        if p[2] >= GOAL_MIN_HEIGHT and np.hypot(p[0], p[1]) >= GOAL_MIN_RADIUS:
            return p
    raise RuntimeError("could not sample a reachable goal")  # pragma: no cover - geometry makes this unreachable


class ReachEnv(gym.Env):
    """Reach a goal position with the flange.

    Args:
        control_rate: policy rate (Hz); the period must be a multiple of the measurement period.
        episode_seconds: episode length (truncation).
        action_scale: joint-position delta (rad) for an action of 1.
        action_max_change: the declared action filter (manifest ``action.max_change``): the most
            the action may change from one step to the next. 0.25 at 20 Hz and 0.05 rad bounds the
            command's acceleration to 0.25*0.05*20^2 = 5 rad/s^2, under every joint's limit (joint 2:
            7.5), so the shield passes the commands unchanged. ``None``: no filter.
        randomization: profile name in ``config/randomization.yaml`` or ranges.
        physics_dt: MuJoCo step (s). measurement_period: sensor period (s). Both default to the
            sim's one declaration (``simreal_ros.sim.arm.PHYSICS_DT``/``MEASUREMENT_PERIOD``).
        success_radius: m. success_speed: flange speed bound for success (m/s).
        obs_terms: observation terms, in order (see ``simreal_ros.policy.observation``).
        render_mode: ``None`` or ``"rgb_array"``.
        real: a hidden "real" arm (:mod:`simreal_ros.sim.real_arm`; a path or loaded) applied
            every reset instead of a randomization draw (the randomization must be nominal).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, control_rate: float = 20.0, episode_seconds: float = 5.0, action_scale: float = 0.05,
                 randomization: str | RandomizationRanges = "nominal", physics_dt: float = PHYSICS_DT,
                 measurement_period: float = MEASUREMENT_PERIOD, success_radius: float = REACH_SUCCESS_RADIUS,
                 success_speed: float = REACH_SUCCESS_SPEED,
                 obs_terms: tuple[str, ...] = DEFAULT_TERMS, render_mode: str | None = None,
                 robot: RobotModel | None = None, real=None, action_max_change: float | None = 0.25) -> None:
        ranges = load_ranges(profile=randomization) if isinstance(randomization, str) else randomization
        if real is not None and not hasattr(real, "table"):
            from simreal_ros.robot import load_robot
            from simreal_ros.sim.real_arm import load_real_arm

            real = load_real_arm(real, robot or load_robot())
        self.arm = ArmSim(ArmSimConfig(physics_dt=physics_dt, measurement_period=measurement_period, ranges=ranges,
                                       real_arm=real), robot=robot)
        self.robot = self.arm.robot
        self.control_period = 1.0 / control_rate
        ticks(self.control_period, measurement_period, "control period (1/control_rate)")
        self.max_steps = ticks(episode_seconds, self.control_period, "episode_seconds")
        self.action_scale = float(action_scale)
        self.action_max_change = None if action_max_change is None else float(action_max_change)
        self.success_radius = float(success_radius)
        self.success_speed = float(success_speed)
        self.obs_terms = tuple(obs_terms)
        n = self.robot.n_joints
        dim = sum(term_sizes(self.obs_terms, n))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(control_rate))}
        self._renderer = None
        self._last_meas = None

    # ------------------------------------------------------------------ evaluation API
    @property
    def measurement(self) -> Measurement | None:
        """The newest joint measurement that has arrived (noise, bias, latency and drops
        applied): what a controller on the robot would see. ``None`` before :meth:`reset`."""
        return self._last_meas

    def advance(self, target: np.ndarray) -> dict[str, Any]:
        """Send joint position ``target`` (rad, robot order) to the arm, simulate one control
        period and take the newest measurement; returns :meth:`status`.

        What :meth:`step` does after turning its action into a target, without the reward, the
        step count or the observation: for evaluation loops that put a safety shield between a
        controller and the arm. Raises ValueError for a malformed target.
        """
        if self._last_meas is None:
            raise RuntimeError("advance() before reset()")
        self.arm.set_command(target)
        self.arm.advance(self.control_period)
        self._measure()
        return self._status()

    def status(self) -> dict[str, Any]:
        """``distance`` (m) of the flange from the goal, flange ``speed`` (m/s) and ``is_success``,
        from the true state (evaluation only)."""
        return self._status()

    # ------------------------------------------------------------------ helpers
    def _measure(self) -> None:
        meas = self.arm.pop_measurements()
        if meas:
            self._last_meas = meas[-1]

    def _obs(self) -> np.ndarray:
        m = self._last_meas
        self._inputs = ObsInputs(q=m.position, dq=m.velocity, goal=self.goal, last_action=self._last_action)
        return build_observation(self.robot, self.obs_terms, self._inputs).astype(np.float32)

    def _status(self) -> dict[str, Any]:
        flange = self.arm.flange_position()
        dist = float(np.linalg.norm(self.goal - flange))
        speed = float(np.linalg.norm(self.arm.flange_velocity()))
        return {"distance": dist, "speed": speed,
                "is_success": reach_success(dist, speed, self.success_radius, self.success_speed)}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        arm_seed = int(self.np_random.integers(2**63 - 1))
        self.arm.reset(seed=arm_seed)
        self.goal = (np.asarray(options["goal"], dtype=float) if options and "goal" in options
                     else sample_goal(self.robot, self.np_random))
        self.arm.set_target(self.goal)
        self._last_action = np.zeros(self.robot.n_joints)
        self._previous_action = np.zeros(self.robot.n_joints)
        self._steps = 0
        # settle one control period so a (possibly delayed) first measurement exists
        self.arm.set_command(self.arm.true_state().position)
        self._last_meas = None
        while self._last_meas is None:
            self.arm.advance(self.arm.config.measurement_period)
            self._measure()
        status = self._status()
        return self._obs(), {**status, "goal": self.goal.copy(), "randomization": self.arm.draw}

    def step(self, action):
        proposed = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
        action = limit_change(proposed, self._last_action, self.action_max_change)
        target = action_to_target(self.robot, self._last_meas.position, action, self.action_scale)
        status = self.advance(target)
        self._steps += 1
        reward, terms = reach_reward(status["distance"], status["is_success"], action, self._last_action,
                                     self._last_meas.velocity, discarded=proposed - action,
                                     previous_action=self._previous_action)
        self._previous_action = self._last_action
        self._last_action = action
        truncated = self._steps >= self.max_steps
        obs = self._obs()
        return obs, reward, False, truncated, {**status, "reward_terms": terms, "target": target}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:  # the arm's workspace fills the frame; the goal marker shows
            self._renderer = SceneCamera(self.arm.model, [0.35, 0.0, 0.4], 1.4, 140.0, -20.0)
        return self._renderer.render(self.arm.data)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
