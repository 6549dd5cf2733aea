"""``simreal robot``: print the robot description as loaded (joints, limits, gains, ready pose)."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from simreal_ros.resources import ResourceNotFoundError
from simreal_ros.robot.errors import RobotDescriptionError
from simreal_ros.robot.loader import load_robot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="panda", help="robot description name (urdf/<name>.urdf)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Exit 0, or 2 with one line naming the file and element when the description is refused."""
    try:
        robot = load_robot(args.name)
    except (RobotDescriptionError, ResourceNotFoundError) as exc:
        print(f"simreal robot: {exc}", file=sys.stderr)
        return 2
    lim = robot.limits
    flange = robot.fk(robot.ready_pose)[:3, 3]
    if args.json:
        print(json.dumps({
            "name": robot.name,
            "joints": list(robot.joint_names),
            "limits": {k: np.asarray(getattr(lim, k)).tolist() for k in lim.__dataclass_fields__},
            "gains": {"stiffness": robot.gains.stiffness.tolist(), "damping": robot.gains.damping.tolist()},
            "ready_pose": robot.ready_pose.tolist(),
            "ready_flange_position_m": flange.tolist(),
        }, indent=2))
        return 0
    print(f"robot '{robot.name}': {robot.base_link} -> {robot.flange_link}; files: {dict(robot.source)}")
    header = f"{'joint':<14}{'q_min':>9}{'q_max':>9}{'dq':>7}{'ddq':>7}{'dddq':>8}{'tau':>6}{'dtau':>7}{'K':>6}{'D':>6}{'ready':>8}"
    print(header)
    for i, name in enumerate(robot.joint_names):
        print(f"{name:<14}{lim.position_min[i]:>9.4f}{lim.position_max[i]:>9.4f}{lim.velocity[i]:>7.3f}"
              f"{lim.acceleration[i]:>7.1f}{lim.jerk[i]:>8.0f}{lim.effort[i]:>6.0f}{lim.effort_rate[i]:>7.0f}"
              f"{robot.gains.stiffness[i]:>6.0f}{robot.gains.damping[i]:>6.1f}{robot.ready_pose[i]:>8.4f}")
    print(f"flange at ready pose: {np.round(flange, 4).tolist()} m")
    return 0
