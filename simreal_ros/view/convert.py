"""Plain values -> Foxglove messages (no ROS, no server): what each live-view channel carries.

Stamps are integer nanoseconds. Poses follow the robot description: frames are the URDF's
link names, the base link is the root, and the transforms come from the package's own
kinematics (:meth:`simreal_ros.robot.model.RobotModel.link_transforms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from foxglove.messages import (
    Color,
    CylinderPrimitive,
    FrameTransform,
    FrameTransforms,
    JointState,
    JointStates,
    Pose,
    Quaternion,
    SceneEntity,
    SceneUpdate,
    SpherePrimitive,
    Timestamp,
    Vector3,
)
from transforms3d.quaternions import mat2quat

from simreal_ros.robot.model import RobotModel

GOAL_COLOR = Color(r=0.1, g=0.8, b=0.2, a=0.8)
OBJECT_COLOR = Color(r=0.9, g=0.5, b=0.1, a=0.9)
GOAL_DIAMETER_M = 0.04


def timestamp(ns: int) -> Timestamp:
    ns = int(ns)
    return Timestamp(ns // 1_000_000_000, ns % 1_000_000_000)


def _optional(values: Sequence[float] | None, i: int) -> float | None:
    return None if values is None or len(values) == 0 else float(values[i])


def joint_states(names: Sequence[str], position: Sequence[float], velocity: Sequence[float] | None = None,
                 effort: Sequence[float] | None = None, stamp_ns: int = 0) -> JointStates:
    """``foxglove.JointStates``: one entry per joint (velocity/effort left out when not given)."""
    if len(position) != len(names):
        raise ValueError(f"{len(position)} positions for {len(names)} joint names")
    joints = []
    for i, name in enumerate(names):
        fields: dict[str, Any] = {"name": str(name), "position": float(position[i])}
        for key, values in (("velocity", velocity), ("effort", effort)):
            v = _optional(values, i)
            if v is not None:
                fields[key] = v
        joints.append(JointState(**fields))
    return JointStates(timestamp=timestamp(stamp_ns), joints=joints)


def _pose(T: np.ndarray) -> tuple[Vector3, Quaternion]:
    w, x, y, z = mat2quat(T[:3, :3])
    if w < 0:  # one hemisphere, so equal rotations give equal messages
        w, x, y, z = -w, -x, -y, -z
    return (Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)))


def link_frames(robot: RobotModel) -> list[tuple[str, str]]:
    """(parent, child) frame pairs, base to flange: one per joint, then the flange's fixed joint."""
    pairs = [(j.parent, j.child) for j in robot.joints]
    if robot.flange_link != robot.joints[-1].child:
        pairs.append((robot.joints[-1].child, robot.flange_link))
    return pairs


def link_transforms(robot: RobotModel, q: Sequence[float], stamp_ns: int = 0, base_alias: str = "") -> FrameTransforms:
    """``foxglove.FrameTransforms``: each link in its parent link's frame at joint positions ``q``
    (and ``base_alias``, when given, as a frame identical to the root link)."""
    world = robot.link_transforms(q)  # base -> each joint's child link (after its rotation), then the flange
    pairs = link_frames(robot)
    ts = timestamp(stamp_ns)
    out, parent_T = [], np.eye(4)
    if base_alias and base_alias != robot.base_link:
        translation, rotation = _pose(np.eye(4))
        out.append(FrameTransform(timestamp=ts, parent_frame_id=robot.base_link, child_frame_id=base_alias,
                                  translation=translation, rotation=rotation))
    for (parent, child), T in zip(pairs, world):
        translation, rotation = _pose(np.linalg.solve(parent_T, T))
        out.append(FrameTransform(timestamp=ts, parent_frame_id=parent, child_frame_id=child,
                                  translation=translation, rotation=rotation))
        parent_T = T
    return FrameTransforms(transforms=out)


def _point(entity_id: str, frame: str, position: Sequence[float], stamp_ns: int, color: Color,
           diameter: float) -> SceneEntity:
    pose = Pose(position=Vector3(x=float(position[0]), y=float(position[1]), z=float(position[2])),
                orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    d = Vector3(x=diameter, y=diameter, z=diameter)
    return SceneEntity(timestamp=timestamp(stamp_ns), frame_id=frame, id=entity_id,
                       spheres=[SpherePrimitive(pose=pose, size=d, color=color)])


def goal_scene(position: Sequence[float], frame: str, stamp_ns: int = 0) -> SceneUpdate:
    """``foxglove.SceneUpdate``: the flange goal as a sphere in ``frame`` (the base link)."""
    return SceneUpdate(entities=[_point("goal", frame, position, stamp_ns, GOAL_COLOR, GOAL_DIAMETER_M)])


def object_scene(position: Sequence[float], orientation_xyzw: Sequence[float], frame: str, stamp_ns: int = 0,
                 diameter: float = 0.06, height: float = 0.03) -> SceneUpdate:
    """``foxglove.SceneUpdate``: a pushed object (the puck) as a cylinder at its pose."""
    x, y, z, w = (float(v) for v in orientation_xyzw)
    pose = Pose(position=Vector3(x=float(position[0]), y=float(position[1]), z=float(position[2])),
                orientation=Quaternion(x=x, y=y, z=z, w=w))
    cyl = CylinderPrimitive(pose=pose, size=Vector3(x=diameter, y=diameter, z=height), bottom_scale=1.0,
                            top_scale=1.0, color=OBJECT_COLOR)
    return SceneUpdate(entities=[SceneEntity(timestamp=timestamp(stamp_ns), frame_id=frame, id="object",
                                             cylinders=[cyl])])


def robot_description(urdf: str) -> dict[str, str]:
    """The URDF text as ``std_msgs/String`` (what Foxglove's 3D panel loads a robot from)."""
    return {"data": urdf}


def interventions(stamp_ns: int, entries: Sequence[dict[str, str]], total: int) -> dict[str, Any]:
    """One shield cycle's interventions (joint, kind, requested, applied, source) and the running total."""
    return {"stamp_ns": int(stamp_ns), "count": len(entries), "total": int(total),
            "kinds": sorted({e.get("kind", "") for e in entries}), "interventions": [dict(e) for e in entries]}


def shield_status(stamp_ns: int, level: int, message: str, values: dict[str, str]) -> dict[str, Any]:
    """The shield's own status report (mode, source, alpha, revert, fault ...) as one JSON message."""
    return {"stamp_ns": int(stamp_ns), "level": int(level), "message": message, **{k: str(v) for k, v in
                                                                                     values.items()}}
