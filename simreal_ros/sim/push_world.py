"""The push task's objects on a simulated arm (ROS-free): the puck, the goal, the contact draw and
the object tracker, shared by the Gymnasium env (:mod:`simreal_ros.sim.push_env`) and the sim
bridge's driver (:mod:`simreal_ros.sim.driver`), so training and the simulated graph see the
same table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import mujoco
import numpy as np

from simreal_ros.robot.mujoco_model import TABLE_TOP
from simreal_ros.robot.planar import PlanarFrame
from simreal_ros.robot.tool import ToolSpec
from simreal_ros.sim.arm import ArmSim
from simreal_ros.sim.push_task import PushTaskConfig
from simreal_ros.sim.randomize import ContactRanges
from simreal_ros.sim.rewards import push_success
from simreal_ros.sim.tracker import ObjectTracker, TrackedPose

FALL_DEPTH = 0.05  # m below the table top: the puck has left the table


@dataclass(frozen=True)
class ContactDraw:
    """One episode's contact values (what :class:`ContactRanges` drew, or a hidden table's)."""

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


class PushWorld:
    """Puck, goal and tracker on ``arm`` (an :class:`ArmSim` built with the push scene).

    Args:
        arm: the arm; its model has the tool, puck and goal (``ArmSimConfig.push``).
        task, tool: the task and the tool on the flange.
        contact_ranges: the profile's ``contact`` section (drawn at every reset).
        table: a hidden table's exact values (``RealArm.table``), replacing the draw; ``None``: draw.
    """

    def __init__(self, arm: ArmSim, task: PushTaskConfig, tool: ToolSpec, contact_ranges: ContactRanges,
                 table: dict[str, float] | None = None) -> None:
        if arm.sim.push is None:
            raise ValueError("PushWorld needs an ArmSim built with the push scene (ArmSimConfig.push)")
        self.arm, self.sim, self.task, self.tool = arm, arm.sim, task, tool
        self.contact_ranges, self.table = contact_ranges, table
        self.frame = PlanarFrame.for_robot(arm.robot, TABLE_TOP + task.push_height, tool.tip_offset, task.workspace,
                                           task.tool_start)
        self._nominal_table_z = float(arm.nominal.geom_pos[self.sim.table_geom][2])
        self.contact: ContactDraw | None = None
        self.goal = np.zeros(2)
        self.tracker: ObjectTracker | None = None
        self.tracked: TrackedPose | None = None

    # ------------------------------------------------------------------ episode
    def reset(self, rng: np.random.Generator, tracker_seed: int, puck: np.ndarray | None = None,
              goal: np.ndarray | None = None) -> dict[str, Any]:
        """After ``arm.reset``: draw the contact (or take the hidden table's), place the puck and the
        goal (sampled with ``rng`` unless given), start the tracker. Returns what was drawn."""
        self.contact = draw_contact(rng, self.contact_ranges, self.task)  # always drawn: same rng use
        if self.table:
            t = self.task
            base = {"table_friction": t.table_friction, "puck_mass": t.puck_mass, "puck_radius": t.puck_radius,
                    "puck_height": t.puck_height, "table_height_offset": 0.0, "tracker_noise_std": 0.0,
                    "tracker_latency": 0.0, "tracker_drop_probability": 0.0}
            self.contact = ContactDraw(**{**base, **self.table})
        self._apply_contact(self.contact)
        p, g = self.sample_start(rng)
        p = p if puck is None else np.asarray(puck, dtype=float)
        self.place_puck(p)
        self.set_goal(g if goal is None else goal)
        c = self.contact
        self.tracker = ObjectTracker(self.task.tracker_rate_hz, c.tracker_noise_std, c.tracker_latency,
                                     c.tracker_drop_probability, np.random.default_rng(tracker_seed))
        self.tracker.reset(self.arm.time)
        self.tracked = None
        return {"puck_start": p.copy(), "goal": self.goal.copy(), "contact": c.as_dict()}

    def sample_start(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        t = self.task
        b = t.puck_start_box
        puck = rng.uniform([b[0], b[1]], [b[2], b[3]])
        return puck, self.sample_goal(rng, puck)

    def sample_goal(self, rng: np.random.Generator, puck: np.ndarray) -> np.ndarray:
        t = self.task
        g = t.goal_box
        for _ in range(1000):
            goal = rng.uniform([g[0], g[1]], [g[2], g[3]])
            if np.linalg.norm(goal - np.asarray(puck)[:2]) >= t.min_goal_distance:
                return goal
        raise ValueError("push task: no goal in goal_box is min_goal_distance from the puck")

    def place_puck(self, xy) -> None:
        d, a = self.arm.data, self.sim.puck_qpos_adr
        d.qpos[a:a + 7] = [xy[0], xy[1], self.table_top + self.contact.puck_height / 2, 1, 0, 0, 0]
        d.qvel[self.sim.puck_dof_adr:self.sim.puck_dof_adr + 6] = 0.0
        mujoco.mj_forward(self.arm.model, d)

    def set_goal(self, xy) -> np.ndarray:
        """Make ``xy`` (m, on the table; a 3rd value is ignored) the goal; ValueError if malformed."""
        g = np.asarray(xy, dtype=float).ravel()[:2]
        if g.shape != (2,) or not np.all(np.isfinite(g)):
            raise ValueError(f"push goal must be finite x, y (m), got {list(np.ravel(xy))}")
        self.goal = g
        self.arm.data.mocap_pos[self.sim.goal_mocap] = [g[0], g[1], self.table_top]
        return self.goal_point

    @property
    def table_top(self) -> float:
        return TABLE_TOP + (self.contact.table_height_offset if self.contact else 0.0)

    @property
    def goal_point(self) -> np.ndarray:
        """The goal as a 3-D point on the nominal table (what the goal topic carries)."""
        return np.array([self.goal[0], self.goal[1], TABLE_TOP])

    # ------------------------------------------------------------------ running
    def track(self) -> list[TrackedPose]:
        """Sample the tracker when due (true puck pose) and return the samples that arrived."""
        t = self.arm.time
        if self.tracker.due(t):
            a = self.sim.puck_qpos_adr
            qp = self.arm.data.qpos
            self.tracker.sample(t, qp[a:a + 3], qp[a + 3:a + 7])
        arrived = self.tracker.pop(t)
        if arrived:
            self.tracked = arrived[-1]
        return arrived

    def puck_state(self) -> tuple[np.ndarray, np.ndarray]:
        """True puck position (3,) and linear velocity (3,) (evaluation only)."""
        a, d = self.sim.puck_qpos_adr, self.sim.puck_dof_adr
        return self.arm.data.qpos[a:a + 3].copy(), self.arm.data.qvel[d:d + 3].copy()

    def puck_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """True puck position (3,) and orientation quaternion w, x, y, z (evaluation only)."""
        a = self.sim.puck_qpos_adr
        return self.arm.data.qpos[a:a + 3].copy(), self.arm.data.qpos[a + 3:a + 7].copy()

    def tool_tip(self) -> np.ndarray:
        """True tool tip position (evaluation only)."""
        g = self.sim.tool_geom
        d = self.arm.data
        return d.geom_xpos[g] + d.geom_xmat[g].reshape(3, 3) @ np.array([0, 0, self.tool.length / 2])

    def status(self) -> dict[str, Any]:
        """True puck-goal ``distance`` (m), puck ``speed`` (m/s), ``is_success``, ``fell``."""
        p, v = self.puck_state()
        dist = float(np.linalg.norm(p[:2] - self.goal))
        speed = float(np.linalg.norm(v[:2]))
        fell = bool(p[2] < self.table_top - FALL_DEPTH)
        return {"distance": dist, "speed": speed, "fell": fell,
                "is_success": push_success(dist, speed, fell, self.task.success_radius, self.task.success_speed)}

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
