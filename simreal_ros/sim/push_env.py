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

import copy
from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from simreal_ros.policy.observation import ObsInputs, build_observation
from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import TABLE_TOP, PushScene
from simreal_ros.robot.planar import PlanarFrame, PlanarReference
from simreal_ros.robot.tool import ToolSpec, load_tool
from simreal_ros.sim.arm import MEASUREMENT_PERIOD, PHYSICS_DT, ArmSim, ArmSimConfig, Measurement, ticks
from simreal_ros.sim.push_task import PushTaskConfig, load_push_task
from simreal_ros.sim.randomize import ContactRanges, RandomizationRanges, load_ranges
from simreal_ros.sim.tracker import ObjectTracker, TrackedPose

#: observation terms of the push task, in order (sizes: 7, 7, 2, 2, 2, 2, 2, 2); built by
#: :func:`simreal_ros.policy.observation.build_observation`, as the executor does on the robot
PUSH_TERMS = ("joint_pos", "joint_vel", "tool_xy", "object_xy", "goal_xy", "tool_to_object", "object_to_goal",
              "last_action_xy")
FALL_DEPTH = 0.05  # m below the table top: the puck has left the table


@dataclass(frozen=True)
class ContactDraw:
    """One episode's contact values (what :class:`ContactRanges` drew)."""

    table_friction: float
    puck_mass: float
    puck_radius: float
    puck_height: float
    table_height_offset: float
    tracker_noise_std: float
    tracker_latency: float
    tracker_drop_probability: float

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


def draw_contact(rng: np.random.Generator, ranges: ContactRanges, task: PushTaskConfig) -> ContactDraw:
    """Uniform draws in each ``[low, high]`` (pure in ``rng`` and ``ranges``)."""
    def u(iv):
        return float(rng.uniform(iv[0], iv[1]))

    size = u(ranges.puck_size_scale)
    return ContactDraw(
        table_friction=task.table_friction * u(ranges.table_friction_scale),  # x U[scale]
        puck_mass=task.puck_mass * u(ranges.puck_mass_scale),  # x U[scale]
        puck_radius=task.puck_radius * size, puck_height=task.puck_height * size,  # one size scale for both
        table_height_offset=u(ranges.table_height_offset),  # m, U[low, high] (signed)
        tracker_noise_std=u(ranges.tracker_noise_std),
        tracker_latency=u(ranges.tracker_latency),
        tracker_drop_probability=u(ranges.tracker_drop_probability),
    )


def _refresh_puck_constants(model: mujoco.MjModel, sim) -> None:
    """Recompute what MuJoCo derives at compile time from the puck's mass and inertia (its
    ``dof_invweight0``, ``body_invweight0``, ``dof_M0``, subtree masses) after they were changed
    in place. With the compiled 0.2 kg puck's weights a 0.6 kg puck went unstable (NaN
    velocities) at the first push. Only the puck's entries are replaced: the arm keeps the
    constraint scaling :class:`~simreal_ros.sim.arm.ArmSim` gives it (which the calibration's
    replay reproduces)."""
    fresh = copy.copy(model)
    mujoco.mj_setConst(fresh, mujoco.MjData(fresh))
    b, d = sim.puck_body, slice(sim.puck_dof_adr, sim.puck_dof_adr + 6)
    model.body_invweight0[b] = fresh.body_invweight0[b]
    model.dof_invweight0[d] = fresh.dof_invweight0[d]
    model.dof_M0[d] = fresh.dof_M0[d]
    model.body_subtreemass[[0, b]] = fresh.body_subtreemass[[0, b]]


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
        self.frame = PlanarFrame.for_robot(self.robot, TABLE_TOP + t.push_height, self.tool.tip_offset, t.workspace,
                                           t.tool_start)
        self.reference = PlanarReference(self.robot, self.frame, t.max_lead)
        n = self.robot.n_joints
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2 * n + 12,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(round(t.control_rate_hz))}
        self._renderer = None
        self._last_meas: Measurement | None = None
        self._tracked: TrackedPose | None = None
        self.contact: ContactDraw | None = None
        m = self.arm.nominal
        self._nominal_table_z = float(m.geom_pos[self.sim.table_geom][2])

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
        a, d = self.sim.puck_qpos_adr, self.sim.puck_dof_adr
        return self.arm.data.qpos[a:a + 3].copy(), self.arm.data.qvel[d:d + 3].copy()

    def tool_tip(self) -> np.ndarray:
        """True tool tip position (evaluation only)."""
        g = self.sim.tool_geom
        d = self.arm.data
        return d.geom_xpos[g] + d.geom_xmat[g].reshape(3, 3) @ np.array([0, 0, self.tool.length / 2])

    # ------------------------------------------------------------------ helpers
    def _measure(self) -> None:
        meas = self.arm.pop_measurements()
        if meas:
            self._last_meas = meas[-1]

    def _track(self) -> None:
        t = self.arm.time
        if self.tracker.due(t):
            a = self.sim.puck_qpos_adr
            qp = self.arm.data.qpos
            self.tracker.sample(t, qp[a:a + 3], qp[a + 3:a + 7])
        arrived = self.tracker.pop(t)
        if arrived:
            self._tracked = arrived[-1]

    def _apply_contact(self, c: ContactDraw) -> None:
        m, nom, s = self.arm.model, self.arm.nominal, self.sim
        m.pair_friction[s.table_pair, :2] = c.table_friction
        m.geom_size[s.puck_geom, :2] = [c.puck_radius, c.puck_height / 2]
        m.body_mass[s.puck_body] = c.puck_mass
        r, h = c.puck_radius, c.puck_height
        ixx = c.puck_mass * (3 * r * r + h * h) / 12.0
        m.body_inertia[s.puck_body] = [ixx, ixx, c.puck_mass * r * r / 2.0]
        m.geom_pos[s.table_geom] = nom.geom_pos[s.table_geom]
        m.geom_pos[s.table_geom, 2] = self._nominal_table_z + c.table_height_offset
        # keep rbound/aabb consistent with the new size (collision broad phase)
        m.geom_rbound[s.puck_geom] = float(np.hypot(r, h / 2))
        m.geom_aabb[s.puck_geom, 3:] = [r, r, h / 2]
        _refresh_puck_constants(m, s)

    def _status(self) -> dict[str, Any]:
        p, v = self.puck_state()
        dist = float(np.linalg.norm(p[:2] - self.goal))
        speed = float(np.linalg.norm(v[:2]))
        fell = bool(p[2] < TABLE_TOP + self.contact.table_height_offset - FALL_DEPTH)
        return {"distance": dist, "speed": speed, "fell": fell,
                "is_success": (not fell) and dist < self.task.success_radius and speed < self.task.success_speed}

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
        return np.array([self.goal[0], self.goal[1], TABLE_TOP])

    def _obs(self) -> np.ndarray:
        m = self._last_meas
        inputs = ObsInputs(q=m.position, dq=m.velocity, goal=self.goal_point, last_action=self._last_action,
                           tool=self.frame.tip_position(self.robot, m.position), object=self._tracked.position)
        return build_observation(self.robot, PUSH_TERMS, inputs).astype(np.float32)

    def _sample_start(self) -> tuple[np.ndarray, np.ndarray]:
        t, rng = self.task, self.np_random
        b, g = t.puck_start_box, t.goal_box
        puck = rng.uniform([b[0], b[1]], [b[2], b[3]])
        for _ in range(1000):
            goal = rng.uniform([g[0], g[1]], [g[2], g[3]])
            if np.linalg.norm(goal - puck) >= t.min_goal_distance:
                return puck, goal
        raise ValueError("push task: no goal in goal_box is min_goal_distance from the puck start region")

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        arm_seed = int(self.np_random.integers(2**63 - 1))
        self.arm.reset(seed=arm_seed, q0=self.frame.rest)
        self.contact = draw_contact(self.np_random, self.ranges.contact, self.task)  # (always drawn: same rng)
        if self.real is not None and self.real.table:
            t = self.task
            base = {"table_friction": t.table_friction, "puck_mass": t.puck_mass, "puck_radius": t.puck_radius,
                    "puck_height": t.puck_height, "table_height_offset": 0.0, "tracker_noise_std": 0.0,
                    "tracker_latency": 0.0, "tracker_drop_probability": 0.0}
            self.contact = ContactDraw(**{**base, **self.real.table})
        self._apply_contact(self.contact)
        puck, self.goal = self._sample_start()
        if options and "puck" in options:
            puck = np.asarray(options["puck"], dtype=float)
        if options and "goal" in options:
            self.goal = np.asarray(options["goal"], dtype=float)
        d, a = self.arm.data, self.sim.puck_qpos_adr
        d.qpos[a:a + 7] = [puck[0], puck[1], TABLE_TOP + self.contact.table_height_offset
                           + self.contact.puck_height / 2, 1, 0, 0, 0]
        d.qvel[self.sim.puck_dof_adr:self.sim.puck_dof_adr + 6] = 0.0
        d.mocap_pos[self.sim.goal_mocap] = [self.goal[0], self.goal[1], TABLE_TOP + self.contact.table_height_offset]
        mujoco.mj_forward(self.arm.model, d)
        c = self.contact
        self.tracker = ObjectTracker(self.task.tracker_rate_hz, c.tracker_noise_std, c.tracker_latency,
                                     c.tracker_drop_probability, np.random.default_rng(arm_seed + 1))
        self.tracker.reset(self.arm.time)
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
                             "contact": c.as_dict()}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=float).reshape(2), -1.0, 1.0)
        target = self.reference.step(self._last_meas.position, self.task.action_scale * action)
        status = self.advance(target)
        self._steps += 1
        tool = self.tool_tip()[:2]
        puck, _ = self.puck_state()
        d = status["distance"]
        terms = {
            "puck_goal": -2.0 * d,
            "progress": 10.0 * (self._prev_distance - d),
            "tool_puck": -0.5 * max(0.0, float(np.linalg.norm(puck[:2] - tool)) - self.task.puck_radius
                                    - self.tool.radius),
            "success": 10.0 if status["is_success"] else 0.0,
            "action_rate": -0.1 * float(np.sum((action - self._last_action) ** 2)),
        }
        self._prev_distance = d
        self._last_action = action
        terminated = bool(status["is_success"] or status["fell"])
        truncated = (not terminated) and self._steps >= self.max_steps
        return self._obs(), float(sum(terms.values())), terminated, truncated, \
            {**status, "reward_terms": terms, "target": target}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.arm.model, 360, 480)
            self._camera = mujoco.MjvCamera()
            self._camera.lookat[:] = [0.52, 0.0, TABLE_TOP]
            self._camera.distance, self._camera.azimuth, self._camera.elevation = 1.0, 200.0, -50.0
        self._renderer.update_scene(self.arm.data, camera=self._camera)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
