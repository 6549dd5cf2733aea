"""Gymnasium puck pushing on the simulated arm (registered as ``SimReal/Push-v0``).

The pusher tool (``urdf/panda_pusher.yaml``) moves in the table plane at the task's push height,
tool down: an action is a tip displacement (x, y) of up to ``action_scale`` m, turned into joint
position targets through the robot model from the *measured* joints
(:class:`simreal_ros.robot.planar.PlanarReference`), so the impedance controller and the safety
shield see joint targets as in the reach task. The puck is seen only through an object
tracker (:mod:`simreal_ros.sim.tracker`: its own rate, noise, latency and drops). Success: the
puck's centre within ``success_radius`` of the goal and slower than ``success_speed``
(true state); the episode then ends. A puck pushed off the table ends it as a failure.

Domain randomization: the arm's profile (``dynamics``, ``sensor``) plus its ``contact`` section
(puck-table friction, puck mass and size, table height, tracker noise/latency/drops).

Evaluation API as :class:`~simreal_ros.sim.env.ReachEnv`: :attr:`measurement`,
:attr:`tracked` (the newest tracked puck pose), :meth:`advance` (one control period with a
joint target), :meth:`status`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from simreal_ros.policy.action import limit_change
from simreal_ros.policy.observation import ObsInputs, build_observation
from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import TABLE_TOP, PushScene
from simreal_ros.robot.planar import PlanarReference
from simreal_ros.robot.tool import ToolSpec, load_tool
from simreal_ros.sim.arm import MEASUREMENT_PERIOD, PHYSICS_DT, ArmSim, ArmSimConfig, Measurement, SceneCamera, ticks
from simreal_ros.sim.push_task import PushTaskConfig, load_push_task
from simreal_ros.sim.push_world import ContactDraw, PushWorld
from simreal_ros.sim.randomize import RandomizationRanges, load_ranges
from simreal_ros.sim.rewards import push_reward
from simreal_ros.sim.tracker import TrackedPose

#: observation terms of the push task, in order (sizes: 7, 7, 2, 2, 2, 2, 2, 2); built by
#: :func:`simreal_ros.policy.observation.build_observation`, as the executor does on the robot
PUSH_TERMS = ("joint_pos", "joint_vel", "tool_xy", "object_xy", "goal_xy", "tool_to_object", "object_to_goal",
              "last_action_xy")


class PushEnv(gym.Env):
    """Push the puck to the goal with the tool.

    Args:
        task: the task (default: ``config/push_task.yaml``).
        randomization: profile name in ``config/randomization.yaml`` or ranges.
        tool: the tool on the flange (default: ``urdf/panda_pusher.yaml``).
        physics_dt, measurement_period: as :class:`~simreal_ros.sim.env.ReachEnv`.
        render_mode: ``None`` or ``"rgb_array"`` (480x360, the table with puck, goal and tool in view).
        real: a hidden "real" arm/table (:mod:`simreal_ros.sim.real_arm`; a path or loaded): its
            exact ``arm`` and ``table`` values replace the randomization draws every reset (the
            randomization must then be nominal).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    #: an episode ends at its first success (evaluation follows the env)
    ends_on_success = True

    def __init__(self, task: PushTaskConfig | None = None, randomization: str | RandomizationRanges = "nominal",
                 tool: ToolSpec | None = None, physics_dt: float = PHYSICS_DT,
                 measurement_period: float = MEASUREMENT_PERIOD, render_mode: str | None = None,
                 robot: RobotModel | None = None, real=None) -> None:
        self.task = task or load_push_task()
        ranges = load_ranges(profile=randomization) if isinstance(randomization, str) else randomization
        self.ranges = ranges
        self.tool = tool or load_tool()
        if real is not None and not hasattr(real, "table"):
            from simreal_ros.robot import load_robot
            from simreal_ros.sim.real_arm import load_real_arm

            real = load_real_arm(real, robot or load_robot())
        if real is not None and ranges != RandomizationRanges():
            raise ValueError(f"a hidden real arm/table ({real.source or 'given'}) has exact values: it cannot be "
                             "combined with randomization ranges (use the nominal profile)")
        self.real = real
        self.arm = ArmSim(ArmSimConfig(physics_dt=physics_dt, measurement_period=measurement_period, ranges=ranges,
                                       push=PushScene(self.tool, self.task), real_arm=real), robot=robot)
        self.robot = self.arm.robot
        self.sim = self.arm.sim
        t = self.task
        self.control_period = 1.0 / t.control_rate_hz
        ticks(self.control_period, measurement_period, "control period (1/control_rate_hz)")
        self.tracker_period = 1.0 / t.tracker_rate_hz
        self._chunks = ticks(self.control_period, self.tracker_period, "control period (a multiple of the "
                             "tracker period)")
        ticks(self.tracker_period, measurement_period, "tracker period")
        self.max_steps = ticks(t.episode_seconds, self.control_period, "episode_seconds")
        self.world = PushWorld(self.arm, t, self.tool, ranges.contact, real.table if real is not None else None)
        self.frame = self.world.frame
        self.reference = PlanarReference(self.robot, self.frame, t.max_lead)
        n = self.robot.n_joints
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2 * n + 12,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(t.control_rate_hz))}
        self._renderer = None
        self._last_meas: Measurement | None = None
        self._tracked: TrackedPose | None = None

    # ------------------------------------------------------------------ evaluation API
    @property
    def measurement(self) -> Measurement | None:
        """The newest joint measurement that has arrived (what a controller sees)."""
        return self._last_meas

    @property
    def tracked(self) -> TrackedPose | None:
        """The newest tracked puck pose that has arrived (what a controller sees)."""
        return self._tracked

    def advance(self, target: np.ndarray) -> dict[str, Any]:
        """Send joint target ``target``, simulate one control period (sampling the tracker at its
        rate) and take the newest measurement and tracked pose; returns :meth:`status`."""
        if self._last_meas is None:
            raise RuntimeError("advance() before reset()")
        self.arm.set_command(target)
        for _ in range(self._chunks):
            self.arm.advance(self.tracker_period)
            self._track()
        self._measure()
        return self._status()

    def status(self) -> dict[str, Any]:
        """True puck-goal ``distance`` (m), puck ``speed`` (m/s), ``is_success``, ``fell``."""
        return self._status()

    def puck_state(self) -> tuple[np.ndarray, np.ndarray]:
        """True puck position (3,) and linear velocity (3,) (evaluation only)."""
        return self.world.puck_state()

    def tool_tip(self) -> np.ndarray:
        """True tool tip position (evaluation only)."""
        return self.world.tool_tip()

    @property
    def contact(self) -> ContactDraw | None:
        """This episode's contact values."""
        return self.world.contact

    @property
    def goal(self) -> np.ndarray:
        """The goal (x, y) on the table (m)."""
        return self.world.goal

    # ------------------------------------------------------------------ helpers
    def _measure(self) -> None:
        meas = self.arm.pop_measurements()
        if meas:
            self._last_meas = meas[-1]

    def _track(self) -> None:
        self.world.track()
        if self.world.tracked is not None:
            self._tracked = self.world.tracked

    def _status(self) -> dict[str, Any]:
        return self.world.status()

    @property
    def action_planar(self) -> dict[str, Any]:
        """The plane of this env's actions as a bundle manifest's ``action.planar`` (so the executor
        rebuilds exactly this frame on the robot)."""
        t = self.task
        return {"height": float(self.frame.height), "tip": [float(v) for v in self.frame.tip],
                "workspace": [float(v) for v in t.workspace], "start": [float(v) for v in t.tool_start],
                "max_lead": float(t.max_lead)}

    @property
    def goal_point(self) -> np.ndarray:
        """The goal as a 3-D point on the table (what the goal topic carries)."""
        return self.world.goal_point

    def _obs(self) -> np.ndarray:
        m = self._last_meas
        inputs = ObsInputs(q=m.position, dq=m.velocity, goal=self.goal_point, last_action=self._last_action,
                           tool=self.frame.tip_position(self.robot, m.position), object=self._tracked.position)
        return build_observation(self.robot, PUSH_TERMS, inputs).astype(np.float32)

    # ------------------------------------------------------------------ gym API
    def _can_continue(self) -> bool:
        """The last episode ended with the puck on the table where the training starts cover it
        (within 5 cm of the goal region), so a new goal can be pushed to from there."""
        if self._last_meas is None:
            return False
        st = self._status()
        p = self.world.puck_state()[0]
        g, m = self.task.goal_box, 0.05
        return (not st["fell"]) and g[0] - m <= p[0] <= g[2] + m and g[1] - m <= p[1] <= g[3] + m

    def _continue(self, goal) -> tuple[np.ndarray, dict]:
        """A new goal from where the last episode ended (tool and puck as they are, the same
        contact draw), as the graph's sequential goals are: no reset of the arm or the puck."""
        puck = self.world.puck_state()[0][:2]
        self.world.set_goal(self.world.sample_goal(self.np_random, puck) if goal is None else goal)
        self._last_action = np.zeros(2)
        self.reference.reset()
        self._steps = 0
        self._prev_distance = self._status()["distance"]
        return self._obs(), {**self._status(), "goal": self.goal.copy(), "puck_start": puck.copy(),
                             "contact": self.world.contact.as_dict(), "continued": True}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New episode. ``options``: ``puck``/``goal`` (x, y) to place them; ``continue``: start
        where the last episode ended with a new goal (when the puck is still on the table near the
        goal region; otherwise a fresh start). Without options and seed (Gymnasium's auto-reset
        in training), an episode continues with the task's ``continue_probability``; a seeded
        reset without ``continue`` is always a fresh start (deterministic per seed)."""
        super().reset(seed=seed)
        opts = options or {}
        cont = opts.get("continue")
        if cont is None:
            cont = seed is None and options is None and self.np_random.random() < self.task.continue_probability
        if cont and self._can_continue():
            return self._continue(opts.get("goal"))
        arm_seed = int(self.np_random.integers(2**63 - 1))
        self.arm.reset(seed=arm_seed, q0=self.frame.rest)
        drawn = self.world.reset(self.np_random, arm_seed + 1, puck=opts.get("puck"), goal=opts.get("goal"))
        puck, c = drawn["puck_start"], self.world.contact
        self._last_action = np.zeros(2)
        self.reference.reset()
        self._steps = 0
        self.arm.set_command(self.arm.true_state().position)
        self._last_meas, self._tracked = None, None
        while self._last_meas is None or self._tracked is None:
            self.arm.advance(self.arm.config.measurement_period)
            self._track()
            self._measure()
        self._prev_distance = self._status()["distance"]
        return self._obs(), {**self._status(), "goal": self.goal.copy(), "puck_start": puck.copy(),
                             "contact": c.as_dict(), "continued": False}

    def step(self, action):
        action = limit_change(np.clip(np.asarray(action, dtype=float).reshape(2), -1.0, 1.0), self._last_action,
                              self.task.action_max_change)
        target = self.reference.step(self._last_meas.position, self.task.action_scale * action)
        status = self.advance(target)
        self._steps += 1
        puck, _ = self.puck_state()
        d = status["distance"]
        reward, terms = push_reward(d, self._prev_distance, self.tool_tip()[:2], puck[:2], status["is_success"],
                                    action, self._last_action, self.task.puck_radius, self.tool.radius)
        self._prev_distance = d
        self._last_action = action
        terminated = bool(status["is_success"] or status["fell"])
        truncated = (not terminated) and self._steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, \
            {**status, "reward_terms": terms, "target": target}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:  # the table with puck, goal and tool
            self._renderer = SceneCamera(self.arm.model, [0.52, 0.0, TABLE_TOP], 1.0, 200.0, -50.0)
        return self._renderer.render(self.arm.data)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
