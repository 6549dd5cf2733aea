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

from dataclasses import dataclass

import numpy as np

from simreal_ros.calibrate.session import Session, SourceInfo
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.robot import RobotModel, load_robot
from simreal_ros.robot.mujoco_model import build_model
from simreal_ros.shield import Shield
from simreal_ros.shield.config import load_shield_config
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
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
