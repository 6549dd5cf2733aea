"""What a push session's bag gives the contact calibration (ROS-free; issue 13): the tracked puck
poses and the measured arm (:func:`read_push_bag` -> :class:`PushLog`), the pushes found in it
(:class:`Segment`), and the arm with the push scene's tool (:class:`ArmTool`: the tool tip's path
and, through the arm's inverse dynamics, the force the tool pushes with).

The replay of the pushes is :mod:`simreal_ros.calibrate.contact_replay`, the fit
:func:`simreal_ros.calibrate.contact.fit_contact`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from simreal_ros import topics
from simreal_ros.robot.mujoco_model import PushScene, build_model
from simreal_ros.robot.tool import ToolSpec
from simreal_ros.sim.push_task import PushTaskConfig

OBJECT_TOPIC = topics.OBJECT_POSE
STATE_TOPIC = topics.JOINT_STATES


class ContactInputError(ValueError):
    """A bag that gives no contact data (the message names the bag and what is missing)."""


@dataclass
class PushLog:
    """What one bag holds for contact identification (times: s since the first joint state)."""

    name: str
    sha256: str
    state_t: np.ndarray  # (N,)
    q: np.ndarray  # (N, n)
    dq: np.ndarray
    tau: np.ndarray | None  # measured motor torques, or None when the bag has no efforts
    obj_t: np.ndarray  # (M,) acquisition stamps of the tracked puck
    obj_p: np.ndarray  # (M, 3)
    obj_quat: np.ndarray  # (M, 4) w x y z
    obj_delay: np.ndarray | None = None  # (M,) s, arrival at the recorder (bag log time) minus acquisition stamp
    state_delay: np.ndarray | None = None  # (N,) s, the same for the joint states


@dataclass
class Segment:
    """One push: from the puck at rest, through contact and free sliding, to rest again."""

    log: str
    t0: float
    t1: float
    contact_s: float  # s of tool-puck contact
    free_slide_s: float  # s of the puck moving with the tool clear
    travel_m: float  # puck displacement


# ---------------------------------------------------------------------------------- reading
def read_push_bag(bag: str | Path, robot: Any = None) -> PushLog:
    """The tracked puck poses and the measured joint states of ``bag``.

    Raises:
        ContactInputError: not a readable bag, no tracked object poses, no joint states, joints
            of another robot (one line naming the bag and the topic).
    """
    from simreal_ros.bag.check import BagReadError, read_topic
    from simreal_ros.calibrate.bag import BagInputError, _joint_states, content_hash, open_checked

    robot, bag, meta, topics = open_checked(bag, robot, ContactInputError)
    if topics.get(OBJECT_TOPIC, ("", 0))[1] == 0:
        raise ContactInputError(f"{bag}: no tracked object poses on {OBJECT_TOPIC} (contact calibration needs a push "
                                "session: simreal sim --task push --record true, or the robot's object tracker)")
    if topics[OBJECT_TOPIC][0] != "geometry_msgs/msg/PoseStamped":
        raise ContactInputError(f"{bag} {OBJECT_TOPIC}: {topics[OBJECT_TOPIC][0]} is not geometry_msgs/msg/PoseStamped")
    if topics.get(STATE_TOPIC, ("", 0))[1] == 0:
        raise ContactInputError(f"{bag}: no joint states on {STATE_TOPIC} (the tool's path comes from the measured arm)")
    try:
        _, obj_msgs = read_topic(bag, OBJECT_TOPIC)
        _, state_msgs = read_topic(bag, STATE_TOPIC)
        s_ns, _, q, dq, tau = _joint_states(bag, STATE_TOPIC, state_msgs, robot)
    except BagReadError as exc:
        raise ContactInputError(str(exc)) from None
    except BagInputError as exc:
        raise ContactInputError(str(exc)) from None
    o_ns = np.array([m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for _, m in obj_msgs], np.int64)
    o_log = np.array([t for t, _ in obj_msgs], np.int64)
    s_log = np.array([t for t, _ in state_msgs], np.int64)
    p = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for _, m in obj_msgs], float)
    quat = np.array([[m.pose.orientation.w, m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z]
                     for _, m in obj_msgs], float)
    epoch = int(s_ns.min())
    so = np.argsort(s_ns, kind="stable")
    keep = np.concatenate([[True], np.diff(s_ns[so]) > 0])
    so = so[keep]
    oo = np.argsort(o_ns, kind="stable")
    okeep = np.concatenate([[True], np.diff(o_ns[oo]) > 0])
    oo = oo[okeep]
    if not np.all(np.isfinite(p[oo])):
        raise ContactInputError(f"{bag} {OBJECT_TOPIC}: non-finite tracked positions")
    return PushLog(bag.name, content_hash(bag, meta), (s_ns[so] - epoch) * 1e-9, q[so], dq[so],
                   None if tau is None else tau[so], (o_ns[oo] - epoch) * 1e-9, p[oo], quat[oo],
                   obj_delay=(o_log[oo] - o_ns[oo]) * 1e-9, state_delay=(s_log[so] - s_ns[so]) * 1e-9)


# ---------------------------------------------------------------------------------- kinematics
class ArmTool:
    """The arm with the push scene's tool (MuJoCo, the sim's own model): the tool's lower cap
    centre and its Jacobian at joint positions, and the nominal inverse dynamics (constraints off)."""

    def __init__(self, robot: Any, tool: ToolSpec, task: PushTaskConfig) -> None:
        sim = build_model(robot, push=PushScene(tool, task))
        self.sim, self.tool = sim, tool
        self.model = copy.copy(sim.model)
        self.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
        self.data = mujoco.MjData(self.model)
        self.body = int(self.model.geom_bodyid[sim.tool_geom])

    def _set(self, q: np.ndarray) -> None:
        d = self.data
        d.qpos[self.sim.qpos_adr] = q
        d.qpos[self.sim.puck_qpos_adr:self.sim.puck_qpos_adr + 3] = [5.0, 5.0, -5.0]  # out of the way

    def tip(self, q: np.ndarray) -> np.ndarray:
        """(N, 3) tool cap centres (the point whose distance to the puck's side minus the tool
        radius is the gap)."""
        out = np.empty((len(q), 3))
        off = np.array([0.0, 0.0, self.tool.length - self.tool.radius])  # in the tool body (flange) frame
        for k, qk in enumerate(q):
            self._set(qk)
            mujoco.mj_kinematics(self.model, self.data)
            out[k] = self.data.xpos[self.body] + self.data.xmat[self.body].reshape(3, 3) @ off
        return out

    def contact_force(self, q: np.ndarray, dq: np.ndarray, ddq: np.ndarray, tau: np.ndarray,
                      tip: np.ndarray) -> np.ndarray:
        """(N, 2) horizontal force the tool exerts on what it touches, from the measured torques:
        ``J^T f_env = tau - ID(q, dq, ddq)`` solved for the force at the tool's cap centre."""
        m, d, da = self.model, self.data, self.sim.dof_adr
        jacp = np.zeros((3, m.nv))
        out = np.empty((len(q), 2))
        for k in range(len(q)):
            self._set(q[k])
            d.qvel[:] = 0.0
            d.qvel[da] = dq[k]
            d.qacc[:] = 0.0
            d.qacc[da] = ddq[k]
            mujoco.mj_inverse(m, d)
            jacp[:] = 0.0
            mujoco.mj_jac(m, d, jacp, None, tip[k], self.body)
            J = jacp[:2][:, da]  # horizontal rows
            resid = tau[k] - d.qfrc_inverse[da]  # = J^T f_on_tool_reaction: torques the contact needs
            out[k] = np.linalg.lstsq(J.T, resid, rcond=None)[0]
        return out
