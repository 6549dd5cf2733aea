"""Recorded sessions from a simulated "real" arm with hidden parameters (ROS-free).

What the calibration tests and ``bench/bench_calibrate.py`` fit: the package's
:class:`~simreal_ros.sim.arm.ArmSim` with dynamics and sensor values that the fitter does not
know (:class:`HiddenArm`: per joint friction, damping, armature, gain scales, encoder bias; a
payload; latencies; optionally other link inertias, e.g. the shape-based ones the URDF had before),
driven like a deployment: the excitation trajectory
(:class:`~simreal_ros.estimator.excitation.ExcitationTrajectory`) is proposed to a real
:class:`~simreal_ros.shield.Shield` at its control period, the shield's sent commands go to the
arm (held until the next, after the action latency), and the shield sees the arm's measurements
only when their observation latency has elapsed. The session holds what a bag holds: every
measurement on its acquisition stamp, every sent command on the shield's stamp, and when each
measurement arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simreal_ros.calibrate.session import Session, SourceInfo
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.robot import RobotModel, load_robot
from simreal_ros.robot.mujoco_model import build_model
from simreal_ros.shield import Shield
from simreal_ros.shield.config import load_shield_config
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.driver import DriverConfig
from simreal_ros.sim.randomize import Draw
from simreal_ros.sim.real_arm import LinkInertial, RealArm

#: The shape-based link inertias the package URDF carried before it took the published identified
#: ones (each link a solid cylinder of plausible mass; link 2: 2.7 kg against 0.65 kg identified),
#: links 1-7 in their joint frames: mass (kg), centre of mass (m), inertia about the centre of mass
#: (kg m^2: ixx, iyy, izz, ixy, ixz, iyz). A "real" arm whose inertias are far from the nominal
#: model's, for the calibration tests and bench.
SHAPE_BASED_INERTIA: dict[str, tuple[float, tuple[float, float, float], tuple[float, ...]]] = {
    "panda_link1": (2.7, (0.0, 0.0, -0.09), (0.011430, 0.011430, 0.004860, 0.0, 0.0, 0.0)),
    "panda_link2": (2.7, (0.0, -0.07, 0.0), (0.006840, 0.004860, 0.006840, 0.0, 0.0, 0.0)),
    "panda_link3": (2.4, (0.03, 0.0, -0.08), (0.007280, 0.007280, 0.004320, 0.0, 0.0, 0.0)),
    "panda_link4": (2.4, (-0.04, 0.06, 0.0), (0.006080, 0.004320, 0.006080, 0.0, 0.0, 0.0)),
    "panda_link5": (2.6, (0.0, 0.03, -0.13), (0.012827, 0.012827, 0.004680, 0.0, 0.0, 0.0)),
    "panda_link6": (1.5, (0.05, 0.0, 0.0), (0.001875, 0.002738, 0.002738, 0.0, 0.0, 0.0)),
    "panda_link7": (0.5, (0.0, 0.0, 0.06), (0.000670, 0.000670, 0.000506, 0.0, 0.0, 0.0)),
}


@dataclass(frozen=True)
class HiddenArm:
    """The "real" arm's values (per joint arrays in robot order; ``None``: the nominal 0/1)."""

    friction: tuple[float, ...] | None = None  # Coulomb (frictionloss), N m
    damping: tuple[float, ...] | None = None  # viscous, N m s/rad
    armature: tuple[float, ...] | None = None  # kg m^2
    stiffness_scale: tuple[float, ...] | None = None
    damping_scale: tuple[float, ...] | None = None
    payload_mass: float = 0.0  # kg
    position_bias: tuple[float, ...] | None = None  # rad
    action_latency: float = 0.0  # s
    observation_latency: float = 0.0  # s
    position_noise_std: float = 0.0  # rad
    velocity_noise_std: float = 0.0  # rad/s
    effort_noise_std: float = 0.0  # N m
    #: link name -> (mass, com, inertia about the com: ixx iyy izz ixy ixz iyz); others nominal
    link_inertia: dict | None = None


def hidden_arm_sim(hidden: HiddenArm, robot: RobotModel | None = None, seed: int = 0) -> ArmSim:
    """An :class:`ArmSim` that is ``hidden`` at every reset (the sim bridge's hidden real arm,
    :class:`~simreal_ros.sim.real_arm.RealArm`); the payload's centre of mass stays the nominal one."""
    robot = robot or load_robot()
    n = robot.n_joints

    def vec(v, default):
        return np.full(n, float(default)) if v is None else np.asarray(v, float)

    draw = Draw(
        joint_friction=vec(hidden.friction, 0.0), joint_damping=vec(hidden.damping, 0.0),
        joint_armature=vec(hidden.armature, 0.0), link_mass_scale=np.ones(n), com_offset=np.zeros((n, 3)),
        stiffness_scale=vec(hidden.stiffness_scale, 1.0), damping_scale=vec(hidden.damping_scale, 1.0),
        payload_mass=float(hidden.payload_mass), position_noise_std=float(hidden.position_noise_std),
        velocity_noise_std=float(hidden.velocity_noise_std), effort_noise_std=float(hidden.effort_noise_std),
        position_bias=vec(hidden.position_bias, 0.0), observation_latency=float(hidden.observation_latency),
        action_latency=float(hidden.action_latency), drop_probability=0.0)
    links = {k: LinkInertial(float(m), tuple(c), tuple(i)) for k, (m, c, i) in (hidden.link_inertia or {}).items()}
    nominal = build_model(robot)
    com = tuple(float(x) for x in nominal.model.body_ipos[nominal.payload_body])
    return ArmSim(ArmSimConfig(real_arm=RealArm(draw, com, links, "calibrate.simsession")), robot=robot, seed=seed)


def record_session(sim: ArmSim, duration: float, excitation: ExcitationTrajectory | None = None,
                   control_period: float = 0.01, name: str = "sim", hold: float = 0.5,
                   controller: str = "excitation") -> Session:
    """Drive ``sim`` through the shield along ``excitation`` for ``duration`` s and return the
    session a bag of it would give (states at 1 kHz on acquisition stamps, sent commands on the
    shield's stamps, arrival times of the states). The first ``hold`` s hold the start pose."""
    robot = sim.robot
    excitation = excitation or ExcitationTrajectory(robot, ExcitationConfig())
    shield = Shield(robot, load_shield_config(mode="active", control_period=control_period,
                                              max_step_gap=2 * control_period,
                                              command_timeout=2.5 * control_period))
    dt = sim.config.measurement_period
    per = round(control_period / dt)
    st, q, dq, tau, recv = [], [], [], [], []
    ct, cmd = [], []
    center = excitation(0.0)[0]
    for k in range(round(duration / dt)):
        now = sim.time
        for m in sim.pop_measurements():
            st.append(m.stamp)
            q.append(m.position)
            dq.append(m.velocity)
            tau.append(m.effort)
            recv.append(now)
            shield.update_state(m.position, m.velocity, stamp=m.stamp, now=now)
        if k % per == 0 and st:
            t_exc = max(0.0, now - hold)
            target = center if now < hold else excitation(t_exc)[0]
            shield.propose("policy", target, kind="position", now=now)
            out = shield.step(now)
            if out.command is not None and (not ct or out.time > ct[-1]):
                sim.set_command(out.command)
                ct.append(out.time)
                cmd.append(out.command.copy())
        sim.advance(dt)
    if shield.counts.get("faults"):
        raise RuntimeError(f"the shield faulted while recording: {dict(shield.counts)}")
    st_a = np.asarray(st)
    src = SourceInfo(name, float(st_a[-1] - st_a[0]), "", controller)
    return Session(robot.joint_names, st_a, np.asarray(q), np.asarray(dq), np.asarray(tau),
                   np.asarray(ct), np.asarray(cmd), source=src, state_recv_t=np.asarray(recv))


@dataclass(frozen=True)
class GraphTiming:
    """The timing of the multi-process graph a paced sim bridge records (what
    :func:`record_graph_session` mimics, ROS-free).

    The bridge runs one publish period (``publish_period``: physics steps, then the newest
    measurement published, stamped with its acquisition time on the sim clock) per timer tick,
    as :class:`~simreal_ros.sim.driver.SimDriver` paced does: a tick that comes late (timer
    jitter; a stall of the process) runs every period that is due at once, so those states are
    published late, and a command that arrived meanwhile takes effect at the sim time the
    bridge has reached, which is behind the wall clock that stamped the command. States and
    commands each take ``transport`` (+ jitter) between processes; the recorder drops a share
    of the states (``drop_probability``) and now and then stalls (what arrives meanwhile is
    logged when it resumes).
    """

    #: s, the bridge's (DriverConfig.publish_rate_hz: 250 Hz)
    publish_period: float = field(default_factory=lambda: 1.0 / DriverConfig().publish_rate_hz)
    timer_jitter: float = 0.0003  # s, mean of the exponential lateness of every tick
    stall_probability: float = 0.02  # per tick
    stall: tuple[float, float] = (0.002, 0.012)  # s, uniform
    transport: float = 0.0003  # s
    transport_jitter: float = 0.0001  # s, mean of the exponential extra
    control_jitter: float = 0.0003  # s, mean lateness of the shield's ticks
    control_phase: float | None = None  # s, shield ticks after the bridge's (None: uniform in the control period)
    drop_probability: float = 0.0  # states the recorder misses
    recorder_stall_rate: float = 0.0  # per s: the recorder stops taking messages (they queue) ...
    recorder_stall: tuple[float, float] = (0.01, 0.2)  # s, uniform: ... for this long
    #: periods run at once at most, then the backlog is skipped (the bridge's)
    max_catchup: int = field(default_factory=lambda: DriverConfig().max_catchup)


def record_graph_session(sim: ArmSim, duration: float, timing: GraphTiming = GraphTiming(),
                         excitation: ExcitationTrajectory | None = None, control_period: float = 0.01,
                         name: str = "graph", hold: float = 0.5, seed: int = 0,
                         applied: list[tuple[float, float]] | None = None) -> Session:
    """Like :func:`record_session`, on the timing of the paced multi-process graph
    (:class:`GraphTiming`): states stamped on the bridge's sim clock, sent commands on the
    shield's wall clock, and the recorder's receive time of every state. ``applied`` (if
    given) gets ``(stamp of the command, time on the states' clock at which the bridge
    applied it)`` for every command: the truth that a bag does not hold."""
    robot = sim.robot
    rng = np.random.default_rng(seed)
    excitation = excitation or ExcitationTrajectory(robot, ExcitationConfig())
    shield = Shield(robot, load_shield_config(mode="active", control_period=control_period,
                                              max_step_gap=4 * control_period,
                                              command_timeout=5 * control_period))
    P = timing.publish_period
    center = excitation(0.0)[0]

    n_stalls = rng.poisson(timing.recorder_stall_rate * (duration + 1.0)) if timing.recorder_stall_rate > 0 else 0
    stall_start = np.sort(rng.uniform(0.0, duration + 1.0, n_stalls))
    stall_end = stall_start + rng.uniform(*timing.recorder_stall, n_stalls)

    def logged(arrival: float) -> float:
        """The recorder's log time of a message arriving at ``arrival``."""
        i = np.searchsorted(stall_start, arrival, side="right") - 1
        return float(max(arrival, stall_end[i])) if i >= 0 else arrival

    def transport() -> float:
        return timing.transport + (rng.exponential(timing.transport_jitter) if timing.transport_jitter > 0 else 0.0)

    st, q, dq, tau, recv = [], [], [], [], []
    ct, cmd, ct_recv = [], [], []
    to_shield: list[tuple[float, float, np.ndarray, np.ndarray]] = []  # (arrival, stamp, q, dq)
    to_bridge: list[tuple[float, float, np.ndarray]] = []  # (arrival, stamp, command)
    periods = 0
    anchor = 0.0  # wall time of sim time 0 (moves forward when a backlog is skipped)
    tick = 1

    def fire(nominal: float, free: float) -> float:
        """When the bridge's tick due at ``nominal`` runs (late: jitter, a stall; never before
        the previous one ended)."""
        w = max(nominal, free)
        if timing.stall_probability > 0 and rng.random() < timing.stall_probability:
            w += rng.uniform(*timing.stall)
        return w + (rng.exponential(timing.timer_jitter) if timing.timer_jitter > 0 else 0.0)

    next_bridge = fire(P, 0.0)
    k_ctrl = 0
    phase = rng.uniform(0.0, control_period) if timing.control_phase is None else timing.control_phase
    next_ctrl = phase
    while periods * P < duration:
        if next_bridge <= next_ctrl:  # ------------------------------------------ bridge tick
            w = next_bridge
            due = int(np.floor((w - anchor) / P + 1e-9)) - periods
            if due > timing.max_catchup:
                anchor += (due - 1) * P
                due = 1
            arrived = [c for c in to_bridge if c[0] <= w]
            to_bridge = [c for c in to_bridge if c[0] > w]
            for _, stamp, c in arrived:  # the executor delivers them before this tick's periods
                sim.set_command(c)
                if applied is not None:
                    applied.append((stamp, sim.time + anchor))
            for _ in range(max(due, 0)):
                sim.advance(P)
                periods += 1
                ms = sim.pop_measurements()
                if not ms:
                    continue
                m = ms[-1]
                stamp = m.stamp + anchor  # the bridge stamps the scheduled wall time of the sim time
                to_shield.append((w + transport(), stamp, m.position, m.velocity))
                if timing.drop_probability > 0 and rng.random() < timing.drop_probability:
                    continue
                st.append(stamp)
                q.append(m.position)
                dq.append(m.velocity)
                tau.append(m.effort)
                recv.append(logged(w + transport()))
            tick += 1
            next_bridge = fire(anchor + tick * P, w)
            continue
        w = next_ctrl  # ------------------------------------------------------------ shield tick
        for a, s, qq, vv in [x for x in to_shield if x[0] <= w]:
            shield.update_state(qq, vv, stamp=s, now=a)
        to_shield = [x for x in to_shield if x[0] > w]
        if shield.state_stamp > -np.inf and st:
            target = center if w < hold else excitation(max(0.0, w - hold))[0]
            shield.propose("policy", target, kind="position", now=w)
            out = shield.step(w)
            if out.command is not None and (not ct or w > ct[-1]):
                ct.append(w)
                cmd.append(out.command.copy())
                to_bridge.append((w + transport(), w, out.command.copy()))
                ct_recv.append(logged(w + transport()))
        k_ctrl += 1
        next_ctrl = phase + k_ctrl * control_period + (rng.exponential(timing.control_jitter)
                                                if timing.control_jitter > 0 else 0.0)
    if shield.counts.get("faults"):
        raise RuntimeError(f"the shield faulted while recording: {dict(shield.counts)}")
    st_a = np.asarray(st)
    src = SourceInfo(name, float(st_a[-1] - st_a[0]), "", "excitation")
    return Session(robot.joint_names, st_a, np.asarray(q), np.asarray(dq), np.asarray(tau),
                   np.asarray(ct), np.asarray(cmd), source=src, state_recv_t=np.asarray(recv),
                   cmd_recv_t=np.asarray(ct_recv))
