"""The simulator parameters the calibration identifies, as ``mujoco.sysid`` parameters.

:func:`replay_spec` is the package's own MuJoCo arm (:func:`~simreal_ros.robot.mujoco_model.build_spec`)
with the robot description's impedance gains written into its actuators, exactly as
:class:`~simreal_ros.sim.arm.ArmSim` drives it (position mode: ``tau = K (q_cmd - q) - D dq`` plus
gravity compensation through the actuators), contacts off and only the joint sensors the bag
has. :func:`build_parameters` declares, on that spec, every parameter of issue 11:

===================  =========================================  ===========  ======================
name                 what                                       unit         applied by
===================  =========================================  ===========  ======================
friction/<joint>     Coulomb friction (``frictionloss``)        N m          joint
damping/<joint>      viscous damping                            N m s/rad    joint
armature/<joint>     reflected rotor inertia                    kg m^2       joint
stiffness_scale/<j>  impedance stiffness / robot description's  1            actuator gain
damping_scale/<j>    impedance damping / robot description's    1            actuator bias
payload_mass         mass on the flange (not gravity comp.)     kg           payload body
payload_com          its centre of mass from the nominal one    m            payload body
inertia/<link>       the link's 10 inertial parameters          (log-Chol.)  ``body_inertia_param``
                     (``InertiaType.Pseudo``: always physical)
action_latency       sent command -> arm (signal delay)         s            ``SignalTransform.delay``
bias/<joint>         position-sensor bias (measured - true)     rad          ``SignalTransform.bias``
===================  =========================================  ===========  ======================
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import sysid

from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import PAYLOAD_BODY, build_spec
from simreal_ros.sim.randomize import payload_inertia

UNITS = {"friction": "N m", "damping": "N m s/rad", "armature": "kg m^2", "stiffness_scale": "1",
         "damping_scale": "1", "payload_mass": "kg", "payload_com": "m", "inertia": "log-Cholesky",
         "action_latency": "s", "bias": "rad", "observation_latency": "s"}


@dataclass(frozen=True)
class Bounds:
    """Search box of each parameter kind (the prior is the nominal model's value)."""

    friction: float = 5.0  # N m
    damping: float = 5.0  # N m s/rad
    armature: float = 0.5  # kg m^2
    gain_scale: tuple[float, float] = (0.5, 1.5)
    payload_mass: float = 5.0  # kg
    payload_com: float = 0.1  # m, each axis
    latency: float = 0.05  # s
    bias: float = 0.02  # rad
    link_mass: tuple[float, float] = (0.1, 10.0)  # x the URDF's


def replay_spec(robot: RobotModel, physics_dt: float, with_effort: bool) -> mujoco.MjSpec:
    """The package's arm as the replay model: gains set, contacts off, joint sensors only."""
    spec = build_spec(robot, physics_dt)
    spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    for s in list(spec.sensors):
        if s.name == "flange_pos" or (not with_effort and s.name.endswith("_torque")):
            spec.delete(s)
    k, d = np.asarray(robot.gains.stiffness, float), np.asarray(robot.gains.damping, float)
    for i, name in enumerate(robot.joint_names):
        act = spec.actuator(name)
        act.gainprm[0] = k[i]
        act.biasprm[1] = -k[i]
        act.biasprm[2] = -d[i]
    return spec


def _setter(kind: str, name: str, robot: RobotModel):
    k = dict(zip(robot.joint_names, np.asarray(robot.gains.stiffness, float)))
    d = dict(zip(robot.joint_names, np.asarray(robot.gains.damping, float)))

    def apply(spec: mujoco.MjSpec, p: sysid.Parameter) -> None:
        v = float(p.value[0])
        if kind == "friction":
            spec.joint(name).frictionloss = v
        elif kind == "armature":
            spec.joint(name).armature = v
        elif kind == "damping":  # MuJoCo 4: [linear, ...] coefficients; the sim sets the linear one
            dmp = np.array(spec.joint(name).damping, float)
            dmp[0] = v
            spec.joint(name).damping = dmp
        elif kind == "stiffness_scale":
            spec.actuator(name).gainprm[0] = k[name] * v
            spec.actuator(name).biasprm[1] = -k[name] * v
        elif kind == "damping_scale":
            spec.actuator(name).biasprm[2] = -d[name] * v
    return apply


def _inertia_setter(link: str):
    """Write pseudo-inertia parameters into ``link`` as its full inertia.

    The toolbox's own modifier (``apply_body_theta_inertia``) sets ``iquat`` to NaN, which
    MuJoCo 4.0.0's compiler refuses ("mass and inertia of moving bodies must be larger than
    mjMINVAL"); a defined ``fullinertia`` already takes precedence over ``inertia``/``iquat``.
    """
    def apply(spec: mujoco.MjSpec, p: sysid.Parameter) -> None:
        m, c, inertia = link_inertial(p.value)
        body = spec.body(link)
        body.explicitinertial = True
        body.mass = m
        body.ipos = c
        body.inertia = np.zeros(3)  # "fullinertia and diagonal inertia cannot both be specified"
        body.fullinertia = inertia
    return apply


def _inertia_parameter(model: mujoco.MjModel, link: str, b: Bounds) -> sysid.Parameter:
    """``link``'s pseudo-inertia parameter, as ``sysid.body_inertia_param(..., InertiaType.Pseudo)``
    builds it (same bounds), but read from the compiled model: the toolbox's reading back of a
    body with two equal principal moments (a cylinder) rotates its inertia in MuJoCo 4.0.0."""
    mm = sysid.model_modifier
    body = model.body(link)
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, body.iquat)
    rot = rot.reshape(3, 3)
    m, c = float(body.mass[0]), np.array(body.ipos, float)
    i_bar = rot @ np.diag(body.inertia) @ rot.T - m * mm.skew(c) @ mm.skew(c)
    theta = mm.theta_from_pseudoinertia(mm.pseudoinertia_from_pi(np.concatenate([[m], m * c, i_bar.ravel()])))
    stretch = np.exp(2 * theta[1:4])
    lo = np.concatenate([0.5 * np.log(m * np.array([b.link_mass[0]])), 0.5 * np.log(stretch * 0.5),
                         theta[4:7] - 0.5, theta[7:10] - 0.5])
    hi = np.concatenate([0.5 * np.log(m * np.array([b.link_mass[1]])), 0.5 * np.log(stretch * 2.0),
                         theta[4:7] + 0.5, theta[7:10] + 0.5])
    p = sysid.Parameter(f"inertia/{link}", theta, lo, hi, modifier=_inertia_setter(link))
    p.inertia_type = sysid.InertiaType.Pseudo
    return p


def build_parameters(spec: mujoco.MjSpec, robot: RobotModel, bounds: Bounds | None = None) -> sysid.ParameterDict:
    """Every parameter (none frozen) at the nominal model's value, with its search box."""
    b = bounds or Bounds()
    model = spec.compile()
    params = sysid.ParameterDict()
    for j in robot.joint_names:
        jn = spec.joint(j)
        params.add(sysid.Parameter(f"friction/{j}", jn.frictionloss, 0.0, b.friction, modifier=_setter("friction", j, robot)))
        params.add(sysid.Parameter(f"damping/{j}", float(np.atleast_1d(jn.damping)[0]), 0.0, b.damping, modifier=_setter("damping", j, robot)))
        params.add(sysid.Parameter(f"armature/{j}", jn.armature, 0.0, b.armature, modifier=_setter("armature", j, robot)))
    for j in robot.joint_names:
        params.add(sysid.Parameter(f"stiffness_scale/{j}", 1.0, *b.gain_scale, modifier=_setter("stiffness_scale", j, robot)))
        params.add(sysid.Parameter(f"damping_scale/{j}", 1.0, *b.gain_scale, modifier=_setter("damping_scale", j, robot)))
    base_ipos = np.array(model.body(PAYLOAD_BODY).ipos, float)  # the compiled nominal (the randomizer's reference)

    def set_payload_mass(s: mujoco.MjSpec, p: sysid.Parameter) -> None:
        body = s.body(PAYLOAD_BODY)
        body.mass = max(float(p.value[0]), 1e-4)
        body.inertia = [payload_inertia(body.mass)] * 3

    def set_payload_com(s: mujoco.MjSpec, p: sysid.Parameter) -> None:
        s.body(PAYLOAD_BODY).ipos = list(base_ipos + p.value)

    params.add(sysid.Parameter("payload_mass", 0.0, 0.0, b.payload_mass, modifier=set_payload_mass))
    params.add(sysid.Parameter("payload_com", np.zeros(3), np.full(3, -b.payload_com), np.full(3, b.payload_com),
                               modifier=set_payload_com))
    for joint in robot.joints:
        params.add(_inertia_parameter(model, joint.child, b))
    params.add(sysid.Parameter("action_latency", 0.0, 0.0, b.latency))
    for j in robot.joint_names:
        params.add(sysid.Parameter(f"bias/{j}", 0.0, -b.bias, b.bias))
    return params


def link_inertial(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(mass, centre of mass, inertia about it: ixx iyy izz ixy ixz iyz) of pseudo-inertia
    parameters ``theta`` (the toolbox's log-Cholesky form, in the link frame)."""
    pi = sysid.model_modifier.pi_from_theta(np.asarray(theta, float))
    m = float(pi[0])
    c = pi[1:4] / m
    i_bar = pi[4:].reshape(3, 3)
    s = sysid.model_modifier.skew(c)
    i_c = i_bar + m * s @ s
    return m, c, np.array([i_c[0, 0], i_c[1, 1], i_c[2, 2], i_c[0, 1], i_c[0, 2], i_c[1, 2]])


#: the parameter kinds ``FitConfig.parameters`` names
KINDS = ("friction", "damping", "armature", "gain_scale", "payload", "inertia", "latency", "bias")
_KIND_OF = {"friction": "friction", "damping": "damping", "armature": "armature", "stiffness_scale": "gain_scale",
            "damping_scale": "gain_scale", "payload_mass": "payload", "payload_com": "payload", "inertia": "inertia",
            "action_latency": "latency", "bias": "bias"}


def kind_of(name: str) -> str:
    """The kind (one of :data:`KINDS`) of parameter ``name``."""
    return _KIND_OF[name.split("/")[0]]


def unidentifiable(params: sysid.ParameterDict, wanted: set[str], joint_names: tuple[str, ...],
                   peak_speed: np.ndarray, min_joint_speed: float, with_effort: bool) -> dict[str, str]:
    """name -> why, for every parameter that stays at the prior: not asked for (reason starting
    with "not fitted"), a joint that did not move (its friction, damping, armature and gains),
    or gains without measured efforts."""
    reasons: dict[str, str] = {}
    for pname in params.keys():
        kind = kind_of(pname)
        if kind not in wanted:
            reasons[pname] = "not fitted (FitConfig.parameters)"
            continue
        who = pname.split("/")[1] if "/" in pname else ""
        if who in joint_names and kind in ("friction", "damping", "armature", "gain_scale"):
            j = joint_names.index(who)
            if peak_speed[j] < min_joint_speed:
                reasons[pname] = (f"joint {who} did not move (peak speed {peak_speed[j]:.3g} rad/s < "
                                  f"min_joint_speed {min_joint_speed} rad/s)")
                continue
        if kind == "gain_scale" and not with_effort:
            reasons[pname] = ("no measured efforts: the impedance gains are indistinguishable from a common "
                              "scale of inertia and friction")
    return reasons
