"""Build the MuJoCo model of the arm from the package's URDF (no third-party model files).

It lives beside the robot description, not in the simulator, so that the parts that need the
arm's dynamics without simulating it (the estimator's inverse dynamics) do not import
:mod:`simreal_ros.sim`. The actuators are impedance-ready (gains are set by whoever drives the
model: :class:`simreal_ros.sim.arm.ArmSim` from ``RobotModel.gains``).

The URDF is compiled with MjSpec and then edited: a scene (floor, table, lights, a mocap
target marker), one joint-impedance actuator per joint, gravity compensation through the
actuators (as the arm's own controller does), a payload body on the flange (not gravity
compensated: an unknown payload is part of the reality gap), sensors and a ``home``
keyframe at the SRDF's ready pose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from simreal_ros.robot.loader import load_robot
from simreal_ros.robot.model import RobotModel
from simreal_ros.robot.tool import ToolSpec

if TYPE_CHECKING:  # the task's config lives with the simulator; only its numbers are read here
    from simreal_ros.sim.push_task import PushTaskConfig

TARGET_BODY = "target"
PAYLOAD_BODY = "payload"
FLANGE_SITE = "flange"
#: Minimal payload mass (MuJoCo needs a positive mass on the body); "no payload".
PAYLOAD_MIN_MASS = 1e-4
#: the table in front of the arm (base frame, m): centre and half extents of the box
TABLE_POS = (0.55, 0.0, 0.05)
TABLE_HALF = (0.25, 0.45, 0.05)
TABLE_TOP = TABLE_POS[2] + TABLE_HALF[2]
PUCK_BODY = "puck"
GOAL_BODY = "goal"


@dataclass(frozen=True)
class PushScene:
    """What the push task adds to the arm's scene: the tool on the flange, the puck, the goal."""

    tool: ToolSpec
    task: PushTaskConfig


@dataclass(frozen=True)
class SimModel:
    """A compiled MuJoCo model plus the index maps the sim core needs."""

    model: mujoco.MjModel
    robot: RobotModel
    qpos_adr: np.ndarray  # per robot joint, in robot order
    dof_adr: np.ndarray
    actuator_ids: np.ndarray
    flange_site: int
    target_mocap: int
    payload_body: int
    link_bodies: np.ndarray  # bodies of the moving links (for mass/CoM randomization)
    # push scene only (-1 / None otherwise)
    push: PushScene | None = None
    puck_body: int = -1
    puck_qpos_adr: int = -1  # free joint: 3 position + 4 quaternion
    puck_dof_adr: int = -1
    puck_geom: int = -1
    table_geom: int = -1
    tool_geom: int = -1
    goal_mocap: int = -1
    table_pair: int = -1  # the puck-table contact pair (its friction is the task's table friction)


def build_spec(robot: RobotModel, physics_dt: float = 0.001, push: PushScene | None = None) -> mujoco.MjSpec:
    """Return an editable MjSpec of the arm in its scene (with the push task's tool, puck and
    goal when ``push`` is given)."""
    spec = mujoco.MjSpec.from_file(robot.source["urdf"])
    spec.compiler.fusestatic = False  # keep the flange frame (fixed joint) as its own body
    # The URDF importer sets discardvisual, which at compile time also dropped the scene's own
    # visual-only geoms (the reach target, the payload box, the push goal): nothing showed them.
    # The URDF's <visual> elements are not imported either way.
    spec.compiler.discardvisual = False
    spec.option.timestep = physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.modelname = f"simreal_{robot.name}"

    world = spec.worldbody
    spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     rgb1=[0.2, 0.3, 0.4], rgb2=[0.1, 0.15, 0.2], width=300, height=300)
    spec.add_material(name="grid", texrepeat=[8, 8], reflectance=0.1).textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
    world.add_light(pos=[0, 0, 3], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.05], material="grid",
                   contype=2, conaffinity=1)
    # A table in front of the arm; its top is below the reach workspace used by the task.
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, pos=list(TABLE_POS), size=list(TABLE_HALF),
                   rgba=[0.55, 0.4, 0.3, 1], contype=2, conaffinity=1)
    target = world.add_body(name=TARGET_BODY, mocap=True, pos=[0.5, 0, 0.5])
    target.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0], rgba=[0.1, 0.9, 0.2, 0.6],
                    contype=0, conaffinity=0)
    world.add_camera(name="overview", pos=[1.6, -1.3, 1.1], xyaxes=[0.63, 0.78, 0, -0.3, 0.24, 0.92])

    # The arm collides with the scene, not with itself (adjacent links overlap by design).
    for geom in spec.geoms:
        if geom.name not in ("floor", "table") and geom.parent.name != TARGET_BODY:
            geom.contype, geom.conaffinity = 1, 2
            geom.rgba = [0.92, 0.92, 0.95, 1]

    flange = spec.body(robot.flange_link)
    flange.add_site(name=FLANGE_SITE, size=[0.01, 0, 0])
    payload = flange.add_body(name=PAYLOAD_BODY, pos=[0, 0, 0.03])
    payload.mass = PAYLOAD_MIN_MASS
    payload.inertia = [1e-6, 1e-6, 1e-6]
    payload.explicitinertial = True
    payload.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.03, 0.03, 0.03], rgba=[0.9, 0.5, 0.1, 1],
                     contype=0, conaffinity=0, mass=0)

    for link in [j.child for j in robot.joints] + [robot.flange_link]:
        spec.body(link).gravcomp = 1.0  # the arm's own model: its controller compensates these
    for i, joint in enumerate(robot.joints):
        j = spec.joint(joint.name)
        j.actgravcomp = True  # gravity compensation is applied through (and limited with) the actuator
        act = spec.add_actuator(name=joint.name, target=joint.name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-robot.limits.effort[i], robot.limits.effort[i]]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
        spec.add_sensor(name=f"{joint.name}_pos", type=mujoco.mjtSensor.mjSENS_JOINTPOS, objname=joint.name,
                        objtype=mujoco.mjtObj.mjOBJ_JOINT)
        spec.add_sensor(name=f"{joint.name}_vel", type=mujoco.mjtSensor.mjSENS_JOINTVEL, objname=joint.name,
                        objtype=mujoco.mjtObj.mjOBJ_JOINT)
        spec.add_sensor(name=f"{joint.name}_torque", type=mujoco.mjtSensor.mjSENS_JOINTACTFRC, objname=joint.name,
                        objtype=mujoco.mjtObj.mjOBJ_JOINT)
    spec.add_sensor(name="flange_pos", type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objname=FLANGE_SITE,
                    objtype=mujoco.mjtObj.mjOBJ_SITE)
    if push is not None:
        _add_push(spec, robot, push)
        for geom in spec.geoms:  # the reach target marker has no meaning in the push scene
            if geom.parent.name == TARGET_BODY:
                geom.rgba = [0, 0, 0, 0]
    qpos = list(robot.ready_pose)
    mpos = [0.5, 0, 0.5]
    if push is not None:
        t = push.task
        x0, y0 = (t.puck_start_box[0] + t.puck_start_box[2]) / 2, (t.puck_start_box[1] + t.puck_start_box[3]) / 2
        qpos += [x0, y0, TABLE_TOP + t.puck_height / 2, 1, 0, 0, 0]
        mpos += [t.goal_box[2], 0, TABLE_TOP]
    spec.add_key(name="home", qpos=qpos, ctrl=list(robot.ready_pose), mpos=mpos)
    return spec


def _add_push(spec: mujoco.MjSpec, robot: RobotModel, push: PushScene) -> None:
    """The tool on the flange, a free puck on the table with its own friction pair, a goal disc."""
    tool, task = push.tool, push.task
    if tool.parent_link != robot.flange_link:
        raise ValueError(f"tool {tool.name!r} is mounted on {tool.parent_link!r}, not the flange {robot.flange_link!r}")
    flange = spec.body(robot.flange_link)
    body = flange.add_body(name=tool.name)
    body.gravcomp = 1.0  # a configured end-effector load
    half = (tool.length - 2 * tool.radius) / 2
    body.add_geom(name=tool.name, type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[tool.radius, half, 0],
                  pos=[0, 0, tool.radius + half], mass=tool.mass, rgba=[0.2, 0.2, 0.25, 1],
                  contype=1, conaffinity=2, friction=[task.tool_friction, 0.005, 0.0001])
    puck = spec.worldbody.add_body(name=PUCK_BODY)
    puck.add_freejoint(name=PUCK_BODY)
    puck.add_geom(name=PUCK_BODY, type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[task.puck_radius, task.puck_height / 2, 0],
                  mass=task.puck_mass, rgba=[0.85, 0.1, 0.1, 1], contype=2, conaffinity=3,
                  friction=[task.tool_friction, 0.005, 0.0001], condim=4)
    # puck-table friction is a pair of its own: exactly the task's (randomized, calibrated) value
    spec.add_pair(name="puck_table", geomname1=PUCK_BODY, geomname2="table", condim=4,
                  friction=[task.table_friction, task.table_friction, 0.005, 0.0001, 0.0001])
    spec.add_exclude(bodyname1=PUCK_BODY, bodyname2="world")  # no second, default puck-table contact
    goal = spec.worldbody.add_body(name=GOAL_BODY, mocap=True)
    # the success region: a 2 mm disc lying on the table (visual only; the mocap puts it at the goal)
    goal.add_geom(type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[task.success_radius, 0.001, 0], pos=[0, 0, 0.001],
                  rgba=[0.1, 0.85, 0.2, 1.0], contype=0, conaffinity=0, mass=0)


def build_model(robot: RobotModel | None = None, physics_dt: float = 0.001, push: PushScene | None = None) -> SimModel:
    """Compile the arm's scene; ``robot`` defaults to the package's Panda."""
    robot = robot or load_robot()
    model = build_spec(robot, physics_dt, push).compile()
    jids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in robot.joint_names]
    aids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in robot.joint_names]
    target_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, TARGET_BODY)
    links = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, j.child) for j in robot.joints]
    return SimModel(
        model=model,
        robot=robot,
        qpos_adr=np.array([model.jnt_qposadr[j] for j in jids]),
        dof_adr=np.array([model.jnt_dofadr[j] for j in jids]),
        actuator_ids=np.array(aids),
        flange_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, FLANGE_SITE),
        target_mocap=int(model.body_mocapid[target_body]),
        payload_body=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, PAYLOAD_BODY),
        link_bodies=np.array(links),
        **(_push_index(model, push) if push is not None else {}),
    )


def _push_index(model: mujoco.MjModel, push: PushScene) -> dict:
    def idx(kind, name):
        return mujoco.mj_name2id(model, kind, name)

    puck_joint = idx(mujoco.mjtObj.mjOBJ_JOINT, PUCK_BODY)
    return {"push": push, "puck_body": idx(mujoco.mjtObj.mjOBJ_BODY, PUCK_BODY),
            "puck_qpos_adr": int(model.jnt_qposadr[puck_joint]), "puck_dof_adr": int(model.jnt_dofadr[puck_joint]),
            "puck_geom": idx(mujoco.mjtObj.mjOBJ_GEOM, PUCK_BODY), "table_geom": idx(mujoco.mjtObj.mjOBJ_GEOM, "table"),
            "tool_geom": idx(mujoco.mjtObj.mjOBJ_GEOM, push.tool.name),
            "goal_mocap": int(model.body_mocapid[idx(mujoco.mjtObj.mjOBJ_BODY, GOAL_BODY)]),
            "table_pair": idx(mujoco.mjtObj.mjOBJ_PAIR, "puck_table")}
