"""Contact calibration of the push task (ROS-free): puck-table friction and puck mass from a
recorded push session (issue 13).

What a bag of the push graph holds and what each parameter shows in:

* the tracked puck poses (``/simreal/object_pose``, stamped at acquisition) and the measured arm
  (``/joint_states``: q, dq and the motor torques) give the tool tip's path (the robot model +
  ``urdf/panda_pusher.yaml``) and, through the arm's inverse dynamics, the force the tool
  pushes with;
* **friction**: the recorded tip path is replayed kinematically against a free MuJoCo puck on
  the table (:func:`replay_spec`: the tool on three stiff slide joints that follow the recorded
  tip position and velocity, the puck-table contact pair as in the task's scene) and the
  simulated puck path is matched to the tracked one with ``mujoco.sysid`` (its bounded
  Gauss-Newton ``optimize`` with the ``mujoco`` backend and ``calculate_intervals`` for the
  interval). Free sliding after the tool lets go decelerates at ``mu g``: that is what identifies
  the friction. When the puck never slides free (a very grippy table: it stops with the tool)
  the friction shows only weakly, which the interval says, and the estimate is refused.
* **mass**: with a kinematically replayed tool the puck's path does not depend on its mass at
  all (every force on it, friction and push alike, scales with the mass), so the mass comes from
  the arm: the contact force the tool exerts, ``J^T f = ID(q, dq, ddq) - tau_measured``, against
  the replay's contact force at the fitted friction, which is proportional to the mass: a
  one-parameter line through the origin, fitted as the geometric mean of the two least-squares
  slopes (reduced major axis; its std from the residual, widened by the residual's correlation
  time). Both forces are noisy (the measured one through differentiated velocities, the replayed
  one through the contact's impulses), and least squares of one on the other tilts towards it:
  on a paced session on the icy table (0.4 kg) measured-on-replayed gave 0.320 kg and
  replayed-on-measured 0.461, their geometric mean 0.384. Needs the measured torques (``effort``
  in the joint states) and an arm model good to a fraction of a newton at the tool (the nominal
  arm, or the arm calibration's). The mass is only as good as the friction where friction
  dominates the push force: on a grippy table (0.6) the puck barely slides free, the friction
  came out 18 % low and the mass 23 % high.

API::

    logs = [read_push_bag(bag) for bag in bags]      # PushLog; ContactInputError names the bag
    result = fit_contact(logs, ContactConfig())      # ContactCalibration: estimates, paths, warnings
    result.estimates["table_friction"].value, .std   # Estimate (see simreal_ros.calibrate.fit)

The tracker's latency and noise (also in ``result.estimates``) are fitted from the same logs by
:func:`simreal_ros.calibrate.tracker.fit_tracker`.

Why ``mujoco.sysid`` for the friction: the problem is exactly its shape (a parameter on an
MjSpec, a recorded control signal, a measured sensor, rollouts); the mass is linear once the
friction is known, so it needs no optimizer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import mujoco
import numpy as np

from simreal_ros import topics
from simreal_ros.robot.mujoco_model import TABLE_HALF, TABLE_POS, PushScene, build_model
from simreal_ros.robot.tool import ToolSpec, load_tool
from simreal_ros.settings import setting, validate_fields
from simreal_ros.sim.push_task import PushTaskConfig, load_push_task

OBJECT_TOPIC = topics.OBJECT_POSE
STATE_TOPIC = topics.JOINT_STATES
GRAVITY = 9.81
#: names of the parameters this module identifies (calibration.yaml's ``parameters`` keys)
PARAMETERS = ("table_friction", "puck_mass", "tracker_latency", "tracker_noise_std")
#: how each is identified (written with it into calibration.yaml)
METHODS = {"table_friction": "mujoco.sysid Gauss-Newton: tracked vs replayed puck path (tool replayed from the "
                             "measured arm); std: the largest of calculate_intervals x residual correlation, the "
                             "scatter of the pushes' own estimates and model_error x the value",
           "puck_mass": "line through the origin, geometric mean of the two least-squares slopes (reduced major "
                        "axis): contact force from the measured torques (inverse dynamics) vs the replay's at the "
                        "fitted friction; std: the largest of the residual's x its correlation, "
                        "the scatter of the pushes' own estimates and model_error x the value",
           "tracker_latency": "the tracked poses' arrival at the recorder (bag log time) minus their acquisition "
                              "stamps, less the same for the joint states (the transport both share); median; std: "
                              "the robust spread of the per-pose delays, at least latency_floor",
           "tracker_noise_std": "robust scatter of the tracked positions' second differences at the tracker's "
                                "rate, 1.4826 MAD / sqrt(6) per axis (white noise; the puck's own motion adds "
                                "little in two samples)"}


class ContactInputError(ValueError):
    """A bag that gives no contact data (the message names the bag and what is missing)."""


@dataclass(frozen=True)
class ContactConfig:
    """How push sessions are segmented and fitted (each setting declared once)."""

    rest_speed: float = setting(0.01, "the puck moves faster than this when pushed or sliding", unit="m/s",
                                low=0.0, low_open=True, high=1.0)
    contact_margin: float = setting(0.004, "tool and puck closer than the sum of their radii plus this are in "
                                    "contact", unit="m", low=0.0, high=0.05)
    pad: float = setting(0.3, "time kept before and after each push (the puck at rest)", unit="s", low=0.05, high=5.0)
    min_free_slide: float = setting(0.15, "least total free sliding (puck moving, tool clear) for the friction",
                                    unit="s", low=0.0, high=10.0)
    min_contact: float = setting(0.3, "least total tool-puck contact for the mass", unit="s", low=0.0, high=60.0)
    force_window: float = setting(0.05, "moving-average window of the measured and replayed contact forces",
                                  unit="s", low=0.004, high=1.0)
    scan_points: int = setting(16, "log-spaced friction values from 0.005 to 1.5 scanned for the fit's start", low=2,
                               high=200)
    max_iters: int = setting(10, "Gauss-Newton iterations of the friction fit", low=1, high=500)
    torque_jump_factor: float = setting(2.0, "an interval between joint states whose torque changes by more than "
                                        "this x its neighbours' change is left out of the force (a new target "
                                        "arrived inside it)", low=1.0, high=1000.0)
    torque_jump_floor: float = setting(0.02, "and by more than this", unit="N m", low=0.0, high=100.0)
    max_relative_std: float = setting(0.25, "an estimate whose std exceeds this fraction of its value is not "
                                      "identified", low=0.0, low_open=True, high=10.0)
    model_error: float = setting(0.05, "least relative std of an estimate: the replay's own systematic error "
                                 "(measured on hidden MuJoCo tables: friction +9 % and +11 %, mass -5 %; paced "
                                 "sessions, 2026-12-02: mass -4 % icy, -5 % slippery-heavy, +23 % on a grippy table "
                                 "whose friction came out 18 % low)", low=0.0, high=1.0)
    widening: float = setting(3.0, "randomization ranges are estimate +- widening x std", low=0.0, high=20.0)
    latency_floor: float = setting(0.005, "least std of the tracker latency (the arrival times' own jitter: the "
                                   "driver cycle, the transport)", unit="s", low=0.0, high=1.0)
    min_tracked_poses: int = setting(50, "fewest tracked poses for the tracker's latency and noise", low=3,
                                     high=1000000)

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass(frozen=True)
class Estimate:
    """One contact parameter; ``value``/``std`` are ``None`` when not identified (``reason`` says
    why; ``fitted`` keeps the optimizer's value then). ``as_dict`` has the keys of the arm's
    estimates in calibration.yaml."""

    name: str
    value: float | None
    std: float | None
    unit: str
    prior: float
    identified: bool
    reason: str = ""
    method: str = ""
    fitted: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {"value": self.value, "std": self.std, "unit": self.unit, "prior": self.prior,
             "identified": self.identified, "method": self.method}
        if self.reason:
            d["reason"] = self.reason
        return d


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


@dataclass
class ContactCalibration:
    estimates: dict[str, Any]  # name -> simreal_ros.calibrate.fit.Estimate
    segments: list[Segment]
    sources: list[dict[str, Any]]
    #: per segment: tracked puck xy, replayed xy with the prior and with the estimate (report panel)
    paths: list[dict[str, Any]] = field(default_factory=list)
    rmse_before: float = float("nan")  # m, tracked vs replayed puck position, prior friction
    rmse_after: float = float("nan")
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: ContactConfig = field(default_factory=ContactConfig)
    task: PushTaskConfig | None = None


# ---------------------------------------------------------------------------------- reading
def read_push_bag(bag: str | Path, robot: Any = None) -> PushLog:
    """The tracked puck poses and the measured joint states of ``bag``.

    Raises:
        ContactInputError: not a readable bag, no tracked object poses, no joint states, joints
            of another robot (one line naming the bag and the topic).
    """
    from simreal_ros.bag.check import BagReadError, check_bag, read_topic
    from simreal_ros.bag.metadata import topic_counts
    from simreal_ros.calibrate.bag import BagInputError, _joint_states, content_hash

    if robot is None:
        from simreal_ros.robot import load_robot

        robot = load_robot()
    bag = Path(bag)
    try:
        meta = check_bag(bag)
    except BagReadError as exc:
        raise ContactInputError(str(exc)) from None
    topics = topic_counts(meta)
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


# ---------------------------------------------------------------------------------- replay model
def replay_spec(task: PushTaskConfig, tool: ToolSpec, table_top: float, physics_dt: float = 0.001,
                tool_mass: float = 2.0, stiffness: float = 4e4) -> mujoco.MjSpec:
    """The table, a free puck with the task's puck-table pair, and the tool's cap on three slide
    joints following the recorded cap centre: a position servo (``stiffness``) with the
    recorded velocity fed forward (a velocity servo, critical damping), so the tool lags the
    recording by micrometres while pushing."""
    spec = mujoco.MjSpec()
    spec.modelname = "simreal_push_contact_replay"
    spec.option.timestep = physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    world = spec.worldbody
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX,
                   pos=[TABLE_POS[0], TABLE_POS[1], table_top - TABLE_HALF[2]], size=list(TABLE_HALF),
                   contype=2, conaffinity=1)
    body = world.add_body(name="tool", gravcomp=1.0)
    for axis, name in (([1, 0, 0], "tool_x"), ([0, 1, 0], "tool_y"), ([0, 0, 1], "tool_z")):
        body.add_joint(name=name, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=axis)
    half = (tool.length - 2 * tool.radius) / 2
    body.add_geom(name="tool", type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[tool.radius, half, 0], pos=[0, 0, half],
                  mass=tool_mass, contype=1, conaffinity=2, friction=[task.tool_friction, 0.005, 0.0001])
    kv = 2.0 * np.sqrt(stiffness * tool_mass)
    for name in ("tool_x", "tool_y", "tool_z"):
        a = spec.add_actuator(name=f"{name}_pos", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        a.gaintype, a.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        a.gainprm[0], a.biasprm[:3] = stiffness, [0.0, -stiffness, 0.0]
    for name in ("tool_x", "tool_y", "tool_z"):
        a = spec.add_actuator(name=f"{name}_vel", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        a.gaintype, a.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        a.gainprm[0], a.biasprm[:3] = kv, [0.0, 0.0, -kv]
    puck = world.add_body(name="puck")
    puck.add_freejoint(name="puck")
    puck.add_geom(name="puck", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[task.puck_radius, task.puck_height / 2, 0],
                  mass=task.puck_mass, contype=2, conaffinity=3, friction=[task.tool_friction, 0.005, 0.0001],
                  condim=4)
    mu = task.table_friction
    spec.add_pair(name="puck_table", geomname1="puck", geomname2="table", condim=4,
                  friction=[mu, mu, 0.005, 0.0001, 0.0001])
    spec.add_exclude(bodyname1="puck", bodyname2="world")
    spec.add_sensor(name="puck_pos", type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objname="puck",
                    objtype=mujoco.mjtObj.mjOBJ_BODY)
    return spec


def _set_puck_mass(model: mujoco.MjModel, mass: float, task: PushTaskConfig) -> None:
    b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "puck")
    r, h = task.puck_radius, task.puck_height
    model.body_mass[b] = mass
    ixx = mass * (3 * r * r + h * h) / 12.0
    model.body_inertia[b] = [ixx, ixx, mass * r * r / 2.0]


# ---------------------------------------------------------------------------------- segments
@dataclass
class _Prepared:
    """One log with the tool's path and the pushes found in it."""

    log: PushLog
    tip: np.ndarray  # (N, 3) tool cap centre at the joint-state stamps
    tip_v: np.ndarray  # (N, 3)
    table_top: float
    segments: list[Segment]
    moving: np.ndarray  # (M,) at the object stamps
    contact: np.ndarray  # (M,)


def _speed(t: np.ndarray, p: np.ndarray, window: float) -> np.ndarray:
    """Puck speed over a centred window (robust to tracker noise)."""
    lo = np.interp(t - window / 2, t, np.arange(len(t)))
    hi = np.interp(t + window / 2, t, np.arange(len(t)))
    def at(x):
        return np.stack([np.interp(x, np.arange(len(t)), p[:, i]) for i in range(2)], axis=1)
    dt = np.interp(hi, np.arange(len(t)), t) - np.interp(lo, np.arange(len(t)), t)
    return np.linalg.norm(at(hi) - at(lo), axis=1) / np.maximum(dt, 1e-9)


def _prepare(log: PushLog, arm: ArmTool, task: PushTaskConfig, tool: ToolSpec, cfg: ContactConfig) -> _Prepared:
    tip = arm.tip(log.q)
    tip_v = np.gradient(tip, log.state_t, axis=0)
    # the table top from where the puck lies (a table height error shows here)
    table_top = float(np.median(log.obj_p[:, 2]) - task.puck_height / 2)
    to = log.obj_t
    inside = (to >= log.state_t[0]) & (to <= log.state_t[-1])
    tip_o = np.stack([np.interp(to, log.state_t, tip[:, i]) for i in range(3)], axis=1)
    speed = _speed(to, log.obj_p, 0.2)
    moving = (speed > cfg.rest_speed) & inside
    gap = np.linalg.norm(tip_o[:, :2] - log.obj_p[:, :2], axis=1) - task.puck_radius - tool.radius
    low_enough = tip_o[:, 2] - tool.radius < log.obj_p[:, 2] + task.puck_height / 2
    contact = (gap < cfg.contact_margin) & low_enough & inside
    segments: list[Segment] = []
    idx = np.flatnonzero(moving)
    if len(idx):
        runs, start = [], idx[0]
        for a, b in zip(idx[:-1], idx[1:]):
            if to[b] - to[a] > 2 * cfg.pad:
                runs.append((start, a))
                start = b
        runs.append((start, idx[-1]))
        dto = np.diff(to, append=to[-1])
        for a, b in runs:
            t0, t1 = max(to[a] - cfg.pad, log.state_t[0]), min(to[b] + cfg.pad, log.state_t[-1])
            sel = (to >= t0) & (to <= t1)
            if sel.sum() < 5 or np.max(np.diff(to[sel]), initial=0.0) > 0.25:
                continue  # a tracker outage inside the push: no trustworthy path
            segments.append(Segment(log.name, float(t0), float(t1),
                                    float(np.sum(dto[sel & contact])), float(np.sum(dto[sel & moving & ~contact])),
                                    float(np.linalg.norm(log.obj_p[sel][-1, :2] - log.obj_p[sel][0, :2]))))
    return _Prepared(log, tip, tip_v, table_top, segments, moving, contact)


# ---------------------------------------------------------------------------------- rollouts
@dataclass
class _Replay:
    """The replay model of one log's table and its segments as sysid sequences."""

    spec: mujoco.MjSpec
    model: mujoco.MjModel
    inits: list[np.ndarray]
    controls: list[np.ndarray]  # (T, 6) per segment on the physics grid
    times: list[np.ndarray]
    meas_t: list[np.ndarray]
    meas: list[np.ndarray]  # (K, 3) tracked positions


def _yaw_quat(quat: np.ndarray) -> np.ndarray:
    w, x, y, z = quat
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _windows(prep: _Prepared, seg: Segment) -> list[tuple[float, float, bool]]:
    """A push cut where the tool touches the puck again ((start, end, starts at rest)): each
    replay starts from the tracked puck, so an error in one contact does not carry into the next."""
    to = prep.log.obj_t
    idx = np.flatnonzero((to >= seg.t0) & (to <= seg.t1))
    c = prep.contact[idx]
    starts = [seg.t0]
    seen_contact, clear_since = False, None
    for k, i in enumerate(idx):
        if c[k]:
            if seen_contact and clear_since is not None and to[i] - clear_since >= 0.1:
                starts.append(float(to[i]) - 0.02)
            seen_contact, clear_since = True, None
        elif clear_since is None:
            clear_since = float(to[i])
    ends = [*starts[1:], seg.t1]
    return [(a, b, k == 0) for k, (a, b) in enumerate(zip(starts, ends)) if b - a >= 0.2]


def _replay(prep: _Prepared, task: PushTaskConfig, tool: ToolSpec, dt: float) -> _Replay:
    from mujoco import sysid

    spec = replay_spec(task, tool, prep.table_top, dt)
    model = spec.compile()
    log = prep.log
    to = log.obj_t
    inits, controls, times, meas_t, meas = [], [], [], [], []
    for seg in prep.segments:
        for t0, t1, at_rest in _windows(prep, seg):
            grid = t0 + dt * np.arange(int(np.floor((t1 - t0) / dt)) + 1)
            ctrl = np.empty((len(grid), 6))
            for i in range(3):
                ctrl[:, i] = np.interp(grid, log.state_t, prep.tip[:, i])
                ctrl[:, 3 + i] = np.interp(grid, log.state_t, prep.tip_v[:, i])
            sel = (to >= t0) & (to <= t1)
            if at_rest:  # the puck's start: the first rest samples, averaged
                p0 = log.obj_p[sel][:3].mean(axis=0)
                v0 = np.zeros(2)
            else:  # moving: the tracked position and velocity there (centred differences, 0.1 s)
                p0 = np.array([np.interp(t0, to, log.obj_p[:, i]) for i in range(3)])
                h = 0.05
                v0 = np.array([(np.interp(t0 + h, to, log.obj_p[:, i]) - np.interp(t0 - h, to, log.obj_p[:, i]))
                               / (2 * h) for i in range(2)])
            qpos = np.zeros(model.nq)
            qpos[:3] = ctrl[0, :3]
            qpos[3:6] = [p0[0], p0[1], prep.table_top + task.puck_height / 2]
            qpos[6:10] = _yaw_quat(log.obj_quat[np.flatnonzero(sel)[0]])
            qvel = np.zeros(model.nv)
            qvel[:3] = ctrl[0, 3:]
            qvel[3:5] = v0
            init = sysid.create_initial_state(model, qpos, qvel)
            init[0] = grid[0]
            keep = sel & (to > grid[0]) & (to <= grid[-1])
            if keep.sum() < 5:
                continue
            inits.append(init)
            controls.append(ctrl)
            times.append(grid)
            meas_t.append(to[keep])
            meas.append(log.obj_p[keep])
    return _Replay(spec, model, inits, controls, times, meas_t, meas)


def _set_friction(model: mujoco.MjModel, mu: float) -> None:
    pair = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_PAIR, "puck_table")
    model.pair_friction[pair, :2] = mu


def rollout(model: mujoco.MjModel, init: np.ndarray, ctrl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step the replay model along ``ctrl``: the puck's path (T, 3) and the tool's horizontal
    contact force on the puck (T, 2) after each step."""
    d = mujoco.MjData(model)
    mujoco.mj_setState(model, d, init, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    tool = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "tool")
    puck = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "puck")
    path, force = np.empty((len(ctrl), 3)), np.zeros((len(ctrl), 2))
    f6 = np.zeros(6)
    for k in range(len(ctrl)):
        d.ctrl[:] = ctrl[k]
        mujoco.mj_step(model, d)
        path[k] = d.qpos[3:6]
        for i in range(d.ncon):
            c = d.contact[i]
            if {c.geom1, c.geom2} == {tool, puck}:
                mujoco.mj_contactForce(model, d, i, f6)
                f = c.frame.reshape(3, 3).T @ f6[:3]  # on geom2, world frame
                force[k] += (f if c.geom2 == puck else -f)[:2]
    return path, force


# ---------------------------------------------------------------------------------- fitting
def _correlation_factor(r: np.ndarray) -> float:
    """sqrt of the integrated autocorrelation time of a residual series (>= 1): the factor by
    which correlated residuals widen a least-squares std computed as if they were independent."""
    r = np.asarray(r, float) - np.mean(r)
    if len(r) < 4 or not np.any(r):
        return 1.0
    n = len(r)
    f = np.fft.rfft(r, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    ac /= ac[0]
    tau = 1.0
    for k in range(1, n):
        if ac[k] <= 0:
            break
        tau += 2 * ac[k]
    return float(np.sqrt(tau))


def origin_slope(a: np.ndarray, b: np.ndarray) -> float:
    """Slope k of ``b ~ k a`` (a line through the origin) when both are noisy: the reduced major
    axis, the geometric mean of the least-squares slope of b on a and the inverse of a on b
    (least squares of one on the other tilts towards the noisier side's axis)."""
    ab = float(a @ b)
    return float(np.sign(ab) * np.sqrt(float(b @ b) / float(a @ a)))


def _masked_mean(f: np.ndarray, use: np.ndarray, kern: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.stack([np.convolve(np.where(use, f[:, i], 0.0), kern, mode="same") / np.maximum(count, 1.0)
                     for i in range(f.shape[1])], axis=1)


def _measured_force(prep: _Prepared, arm: ArmTool, cfg: ContactConfig) -> tuple[np.ndarray, ...]:
    """The tool's horizontal force on the puck from the arm, per interval between joint states
    inside a push: (interval mid times, (K, 2) force N, usable). Per interval, not per sample:
    the velocity difference over the interval is the mean acceleration, and the torques at its
    two ends average to the interval's mean torque; an interval whose torque jumps alone (a new
    impedance target arrived inside it: the mean is then unknown; a contact builds up over
    several intervals) is not usable."""
    log = prep.log
    t = log.state_t
    inside = np.zeros(len(t) - 1, bool)
    for seg in prep.segments:
        inside |= (t[1:] >= seg.t0 - 0.1) & (t[:-1] <= seg.t1 + 0.1)
    k = np.flatnonzero(inside)
    dt = t[k + 1] - t[k]
    q = 0.5 * (log.q[k] + log.q[k + 1])
    dq = 0.5 * (log.dq[k] + log.dq[k + 1])
    ddq = (log.dq[k + 1] - log.dq[k]) / dt[:, None]
    tau = 0.5 * (log.tau[k] + log.tau[k + 1])
    dtau = np.max(np.abs(np.diff(log.tau, axis=0)), axis=1)
    jump = dtau[k]
    around = np.maximum(dtau[np.maximum(k - 1, 0)], dtau[np.minimum(k + 1, len(dtau) - 1)])
    ok = ~((jump > cfg.torque_jump_factor * around) & (jump > cfg.torque_jump_floor))
    tip = 0.5 * (prep.tip[k] + prep.tip[k + 1])
    return 0.5 * (t[k] + t[k + 1]), arm.contact_force(q, dq, ddq, tau, tip), ok, k, k + 1


def fit_contact(logs: Sequence[PushLog], cfg: ContactConfig | None = None, robot: Any = None,
                task: PushTaskConfig | None = None, tool: ToolSpec | None = None,
                physics_dt: float = 0.001) -> ContactCalibration:
    """Identify the puck-table friction and the puck mass from ``logs`` (see the module docstring)."""
    import time as _time

    from mujoco import sysid
    from scipy.special import stdtrit

    from simreal_ros.calibrate.tracker import fit_tracker  # it imports this module's types

    wall = _time.perf_counter()
    cfg = cfg or ContactConfig()
    if robot is None:
        from simreal_ros.robot import load_robot

        robot = load_robot()
    task = task or load_push_task()
    tool = tool or load_tool(flange_link=robot.flange_link)
    arm = ArmTool(robot, tool, task)
    preps = [_prepare(log, arm, task, tool, cfg) for log in logs]
    segments = [s for p in preps for s in p.segments]
    warnings: list[str] = []
    names = ", ".join(log.name for log in logs)
    contact_s = sum(s.contact_s for s in segments)
    free_s = sum(s.free_slide_s for s in segments)
    stats: dict[str, Any] = {"pushes": len(segments), "contact_s": round(contact_s, 3),
                             "free_slide_s": round(free_s, 3)}
    sources = [{"name": p.log.name, "duration_s": float(p.log.state_t[-1] - p.log.state_t[0]), "sha256": p.log.sha256,
                "controller": "push", "pushes": len(p.segments), "table_top_m": p.table_top} for p in preps]

    def not_identified(name: str, unit: str, prior: float, why: str, fitted: float | None = None) -> Estimate:
        warnings.append(f"{name}: {why}")
        return Estimate(name, None, None, unit, prior, False, why, METHODS[name], fitted)

    prior_mu, prior_m = task.table_friction, task.puck_mass
    result = ContactCalibration({}, segments, sources, stats=stats, warnings=warnings, config=cfg, task=task)
    tracker = fit_tracker(logs, cfg, task.tracker_rate_hz)
    warnings += [f"{e.name}: {e.reason}" for e in tracker.values() if not e.identified]
    if not segments:
        why = f"the tool never moved the puck in {names} (no push: nothing shows the contact)"
        result.estimates = {"table_friction": not_identified("table_friction", "", prior_mu, why),
                            "puck_mass": not_identified("puck_mass", "kg", prior_m, why), **tracker}
        stats["wall_time_s"] = _time.perf_counter() - wall
        return result

    # --- friction: the puck's path with mujoco.sysid
    replays = [_replay(p, task, tool, physics_dt) for p in preps if p.segments]
    params = sysid.ParameterDict()

    def modifier(spec: mujoco.MjSpec, p: sysid.Parameter) -> None:
        v = float(p.value[0])
        spec.pair("puck_table").friction = [v, v, 0.005, 0.0001, 0.0001]

    params.add(sysid.Parameter("table_friction", prior_mu, 0.002, 2.0, modifier=modifier))
    seqs = []
    for r_i, rp in enumerate(replays):
        smap = sysid.TimeSeries.compute_all_sensor_mapping(rp.model)
        for k in range(len(rp.inits)):
            ctrl = sysid.TimeSeries(rp.times[k], rp.controls[k])
            meas = sysid.TimeSeries(rp.meas_t[k], rp.meas[k], smap)
            seqs.append(sysid.ModelSequences(f"push{r_i}_{k}", rp.spec, f"push{r_i}_{k}", rp.inits[k], ctrl, meas))

    def xy_residual(params_, pred, meas, model, return_pred_all, state=None):
        from mujoco.sysid._src import signal_modifier

        meas_w = signal_modifier.apply_delayed_ts_window(meas, pred, 0.0, 0.0)
        pred_r = pred.resample(meas_w.times)
        # the same mapping object: sysid compares the two mappings (dicts of arrays) with !=
        pred_r = sysid.TimeSeries(pred_r.times, pred_r.data, meas_w.signal_mapping)
        return (meas_w.data - pred_r.data)[:, :2].ravel(), pred_r, meas_w

    residual_fn = sysid.build_residual_fn(models_sequences=seqs, modify_residual=xy_residual, n_threads=1)
    r0 = np.concatenate(residual_fn(params.as_vector(), params)[0])
    # A contact rollout's residual is bumpy in the friction and a slippery table is far from the
    # prior: a coarse log-spaced scan finds the basin, Gauss-Newton (finite differences of a few
    # percent of the value, not the default 1.5e-8) refines it and gives the Jacobian for the interval.
    scan = np.geomspace(0.005, 1.5, cfg.scan_points)
    sse = [float(np.sum(np.concatenate(residual_fn(np.array([v]), params)[0]) ** 2)) for v in scan]
    start = float(scan[int(np.argmin(sse))])
    step = float(scan[1] / scan[0])
    params["table_friction"].value[:] = start
    params["table_friction"].min_value[:] = max(0.002, start / step)
    params["table_friction"].max_value[:] = min(2.0, start * step)
    opt, res = sysid.optimize(params, residual_fn, optimizer="mujoco", verbose=False, max_iters=cfg.max_iters,
                              eps=0.02 * start, xtol=1e-2)
    stats["friction_scan"] = {"values": [float(v) for v in scan], "sse_m2": sse}
    r_star = residual_fn(res.x, opt)[0]
    _, half = sysid.calculate_intervals(r_star, res.jac)
    flat = np.concatenate(r_star)
    dof = max(1, flat.size - 1)
    corr = max(_correlation_factor(r[0::2]) for r in r_star if r.size > 8) if any(r.size > 8 for r in r_star) else 1.0
    mu, mu_std = float(opt["table_friction"].value[0]), float(half[0] / stdtrit(dof, 0.975)) * corr
    # The interval above knows the tracker noise only, not the replay's own error (the tool's
    # shape and tilt, the puck's spin, a contact model that is not the table's). Each push
    # window's own Gauss-Newton estimate from the same Jacobian shows that error as scatter
    # between pushes (the std of their mean); the std is the larger of the two, and at least
    # model_error of the value (the bias measured on hidden tables, which no scatter shows).
    J = np.asarray(res.jac, float).reshape(-1)
    spread = np.nan
    if J.size == flat.size:
        cuts = np.cumsum([r.size for r in r_star])[:-1]
        mus = []
        for Ji, ri in zip(np.split(J, cuts), r_star):
            w_i = float(Ji @ Ji)
            if w_i > 0:
                mus.append(mu - float(Ji @ ri) / w_i)
        if len(mus) >= 3:
            spread = float(np.std(mus, ddof=1) / np.sqrt(len(mus)))
            stats["friction_per_push"] = [float(x) for x in mus]
    stats["friction_std_noise"] = mu_std
    stats["friction_std_between_pushes"] = spread
    mu_std = max(mu_std, spread if np.isfinite(spread) else 0.0, cfg.model_error * mu)
    stats.update(friction_iterations=int(getattr(res, "nit", 0) or 0), friction_residual_rms_m=float(
        np.sqrt(np.mean(flat ** 2))), friction_residual_rms_prior_m=float(np.sqrt(np.mean(r0 ** 2))),
        friction_correlation_factor=corr)
    if free_s < cfg.min_free_slide:
        est_mu = not_identified("table_friction", "", prior_mu,
                                f"the puck slid free of the tool for only {free_s:.2f} s in {names} (at least "
                                f"{cfg.min_free_slide:g} s needed): the table is so grippy that the puck stops with "
                                f"the tool, and its path hardly depends on the friction (fit {mu:.3g} +- {mu_std:.2g})")
    elif not np.isfinite(mu_std) or mu_std > cfg.max_relative_std * mu:
        est_mu = not_identified("table_friction", "", prior_mu,
                                f"the tracked puck paths leave it uncertain: {mu:.3g} +- {mu_std:.2g}")
    else:
        est_mu = Estimate("table_friction", mu, mu_std, "", prior_mu, True, "", METHODS["table_friction"], mu)
    mu_used = mu if est_mu.identified else prior_mu

    # --- replays (report paths, the contact force for the mass)
    paths, err_before, err_after = [], [], []
    f_meas_all, f_sim_all = [], []
    measured: dict[str, tuple[np.ndarray, ...]] = {}
    have_tau = all(p.log.tau is not None for p in preps if p.segments)
    for p, rp in zip([p for p in preps if p.segments], replays):
        m_prior, m_fit = copy.copy(rp.model), copy.copy(rp.model)
        _set_friction(m_prior, prior_mu)
        _set_friction(m_fit, mu_used)
        log = p.log
        if have_tau:
            measured[log.name] = _measured_force(p, arm, cfg)
        for k in range(len(rp.inits)):
            before, _ = rollout(m_prior, rp.inits[k], rp.controls[k])
            after, force = rollout(m_fit, rp.inits[k], rp.controls[k])
            grid = rp.times[k]
            mt, mp = rp.meas_t[k], rp.meas[k]
            pb = np.stack([np.interp(mt, grid, before[:, i]) for i in range(2)], axis=1)
            pa = np.stack([np.interp(mt, grid, after[:, i]) for i in range(2)], axis=1)
            err_before.append(mp[:, :2] - pb)
            err_after.append(mp[:, :2] - pa)
            paths.append({"log": log.name, "t0": float(rp.times[k][0]), "tracked": mp[:, :2].tolist(), "prior": pb.tolist(),
                          "calibrated": pa.tolist(), "tool": [[float(np.interp(t, log.state_t, p.tip[:, i]))
                                                               for i in range(2)] for t in mt]})
            if not have_tau:
                continue
            fm_t, fm, ok, k0, k1 = measured[log.name]
            sel = np.flatnonzero((fm_t >= grid[0]) & (fm_t <= grid[-1]))
            if len(sel) < 3:
                continue
            # the replay's force averaged over the same intervals, masked and smoothed alike
            ia = np.searchsorted(grid, log.state_t[k0[sel]])
            ib = np.searchsorted(grid, log.state_t[k1[sel]])
            csum = np.vstack([np.zeros((1, 2)), np.cumsum(force, axis=0)])
            fs = (csum[ib] - csum[ia]) / np.maximum(ib - ia, 1)[:, None]
            use = ok[sel] & (ib > ia)
            n_w = max(1, int(round(cfg.force_window / max(float(np.median(np.diff(fm_t))), 1e-6))))
            kern = np.ones(n_w)
            count = np.convolve(use.astype(float), kern, mode="same")

            good = count >= 0.5 * n_w
            f_meas_all.append(_masked_mean(fm[sel], use, kern, count)[good])
            f_sim_all.append(_masked_mean(fs, use, kern, count)[good])
    result.paths = paths
    result.rmse_before = float(np.sqrt(np.mean(np.concatenate(err_before) ** 2 * 2)))
    result.rmse_after = float(np.sqrt(np.mean(np.concatenate(err_after) ** 2 * 2)))

    # --- mass: the measured contact force against the replay's (proportional to the mass)
    if not have_tau:
        est_m = not_identified("puck_mass", "kg", prior_m, f"no measured torques (effort) in the joint states of "
                               f"{names}: the mass shows only in the force the tool pushes with")
    elif contact_s < cfg.min_contact:
        est_m = not_identified("puck_mass", "kg", prior_m, f"the tool touched the puck for only {contact_s:.2f} s "
                               f"in {names} (at least {cfg.min_contact:g} s needed)")
    elif not est_mu.identified:
        est_m = not_identified("puck_mass", "kg", prior_m, "needs the friction (the pushing force is mass x "
                               "(acceleration + friction x g)), which is not identified")
    else:
        fm, fs = np.concatenate(f_meas_all), np.concatenate(f_sim_all)
        use = np.linalg.norm(fs, axis=1) > 1e-4
        a, b = fs[use].ravel(), fm[use].ravel()
        ss = float(a @ a)
        if use.sum() < 10 or ss <= 0:
            est_m = not_identified("puck_mass", "kg", prior_m, "the replay's tool never pushed the puck")
        else:
            scale = origin_slope(a, b)  # both forces noisy: the reduced major axis
            stats["mass_least_squares_kg"] = float(a @ b) / ss * prior_m  # measured on replayed (tilted to 0)
            r = b - scale * a
            s2 = float(r @ r) / max(1, r.size - 1)
            corr_m = _correlation_factor(r[0::2])
            m, m_std = scale * prior_m, float(np.sqrt(s2 / ss)) * corr_m * prior_m
            # and the scatter of the pushes' own estimates (the arm model's error shows there)
            per = []
            for fm_i, fs_i in zip(f_meas_all, f_sim_all):
                u = np.linalg.norm(fs_i, axis=1) > 1e-4
                ai, bi = fs_i[u].ravel(), fm_i[u].ravel()
                if ai.size >= 4 and ai @ ai > 0:
                    per.append(origin_slope(ai, bi) * prior_m)
            stats["mass_std_noise_kg"] = m_std
            if len(per) >= 3:
                spread_m = float(np.std(per, ddof=1) / np.sqrt(len(per)))
                stats["mass_per_push_kg"] = per
                stats["mass_std_between_pushes_kg"] = spread_m
                m_std = max(m_std, spread_m)
            m_std = max(m_std, cfg.model_error * abs(m))
            stats.update(mass_force_samples=int(use.sum()), mass_force_residual_rms_n=float(np.sqrt(s2)),
                         mass_force_rms_n=float(np.sqrt(np.mean(b ** 2))), mass_correlation_factor=corr_m)
            if not m > 0 or m_std > cfg.max_relative_std * m:
                est_m = not_identified("puck_mass", "kg", prior_m, f"the measured contact force leaves it "
                                       f"uncertain: {m:.3g} +- {m_std:.2g} kg")
            else:
                est_m = Estimate("puck_mass", m, m_std, "kg", prior_m, True, "", METHODS["puck_mass"], m)
    result.estimates = {"table_friction": est_mu, "puck_mass": est_m, **tracker}
    stats["wall_time_s"] = _time.perf_counter() - wall
    return result


# ---------------------------------------------------------------------------------- outputs
def _as_plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_as_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_plain(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def contact_document(cc: ContactCalibration) -> dict[str, Any]:
    """calibration.yaml's ``calibration.contact`` section."""
    return {
        "sources": _as_plain(cc.sources),
        "parameters": {k: {**e.as_dict(), "provenance": [s["name"] for s in cc.sources]}
                       for k, e in cc.estimates.items()},
        "pushes": len(cc.segments),
        "contact_s": cc.stats.get("contact_s"), "free_slide_s": cc.stats.get("free_slide_s"),
        "replay": {"puck_path_rmse_m": {"before": cc.rmse_before, "after": cc.rmse_after},
                   "note": "tracked vs replayed puck position over every push window; before: the task's "
                           "friction, after: the estimate (the puck path does not depend on the mass)"},
        "fit": _as_plain({k: v for k, v in cc.stats.items() if k != "friction_scan"}),
        "config": _as_plain({k: getattr(cc.config, k) for k in cc.config.__dataclass_fields__}),
        "warnings": list(cc.warnings),
    }


def contact_profile(cc: ContactCalibration | None, widening: float | None = None) -> dict[str, Any]:
    """The randomization profile's ``contact`` section: the ``default`` profile's, with the
    friction and mass scales centred on the estimates (estimate +- widening x std, over the
    task's values) where they were identified."""
    from dataclasses import asdict

    from simreal_ros.sim.randomize import load_ranges

    out = _as_plain(asdict(load_ranges(profile="default").contact))
    if cc is None:
        return out
    w = cc.config.widening if widening is None else widening
    task = cc.task or load_push_task()
    for name, key, nominal in (("table_friction", "table_friction_scale", task.table_friction),
                               ("puck_mass", "puck_mass_scale", task.puck_mass)):
        e = cc.estimates.get(name)
        if e is not None and e.identified:
            lo, hi = max(e.value - w * e.std, 1e-3 * e.value), e.value + w * e.std
            out[key] = [float(lo / nominal), float(hi / nominal)]
    for name in ("tracker_latency", "tracker_noise_std"):  # absolute ranges
        e = cc.estimates.get(name)
        if e is not None and e.identified:
            out[name] = [float(max(e.value - w * e.std, 0.0)), float(e.value + w * e.std)]
    return out


def write_contact_report(cc: ContactCalibration, out: Path) -> dict[str, Path]:
    """``report_contact.png``: tracked vs replayed puck paths (prior friction, calibrated) for
    the longest pushes, and the estimates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(out) / "report_contact.png"
    shown = sorted(cc.paths, key=lambda p: -len(p["tracked"]))[:3]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(4.2 * (len(shown) + 1), 4.2))
    axes = np.atleast_1d(axes)
    for ax, p in zip(axes, shown):
        tr, pr, ca, tl = (np.asarray(p[k]) for k in ("tracked", "prior", "calibrated", "tool"))
        ax.plot(tl[:, 0], tl[:, 1], color="0.7", lw=1, label="tool (measured arm)")
        ax.plot(tr[:, 0], tr[:, 1], "k.", ms=3, label="tracked puck")
        ax.plot(pr[:, 0], pr[:, 1], "r-", lw=1, label="replay, prior")
        ax.plot(ca[:, 0], ca[:, 1], "b--", lw=1.2, label="replay, calibrated")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"{p['log']} t={p['t0']:.1f} s", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("x (m)", fontsize=8)
    if shown:
        axes[0].legend(fontsize=7)
    ax = axes[-1]
    ax.axis("off")
    lines = [f"pushes {len(cc.segments)}, contact {cc.stats.get('contact_s', 0):.1f} s, "
             f"free sliding {cc.stats.get('free_slide_s', 0):.1f} s",
             f"puck path RMSE: prior {cc.rmse_before * 1e3:.1f} mm -> calibrated {cc.rmse_after * 1e3:.1f} mm"]
    for e in cc.estimates.values():
        if e.identified:
            lines.append(f"{e.name}: {e.value:.4g} +- {e.std:.2g} {e.unit} (prior {e.prior:.3g})")
        else:
            lines.append(f"{e.name}: not identified")
            lines += ["  " + e.reason[i:i + 52] for i in range(0, min(len(e.reason), 208), 52)]
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
    fig.suptitle("simreal calibrate: contact (tracked vs replayed puck)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {"report_contact_png": path}
