"""The robot description: one source of truth for joints, limits and kinematics."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from simreal_ros.resources import resource
from simreal_ros.robot import RobotDescriptionError, load_robot

# Franka's published Panda tables (shared/robot_facts.md), typed here only to check the files.
DH = [  # a, d, alpha
    (0.0, 0.333, 0.0), (0.0, 0.0, -math.pi / 2), (0.0, 0.316, math.pi / 2), (0.0825, 0.0, math.pi / 2),
    (-0.0825, 0.384, -math.pi / 2), (0.0, 0.0, math.pi / 2), (0.088, 0.0, math.pi / 2),
]
FLANGE_D = 0.107
PUBLISHED = {
    "position_max": [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973],
    "position_min": [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973],
    "velocity": [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61],
    "acceleration": [15, 7.5, 10, 12.5, 15, 20, 20],
    "jerk": [7500, 3750, 5000, 6250, 7500, 10000, 10000],
    "effort": [87, 87, 87, 87, 12, 12, 12],
    "effort_rate": [1000] * 7,
}


def dh_fk(q):
    """Flange pose from the modified (Craig) DH table, independent of the URDF."""
    T = np.eye(4)
    for (a, d, alpha), theta in zip(DH, q):
        ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
        T = T @ np.array([[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa], [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])
    flange = np.eye(4)
    flange[2, 3] = FLANGE_D
    return T @ flange


@pytest.fixture(scope="module")
def robot():
    return load_robot()


def test_fk_from_urdf_matches_dh_table(robot):
    rng = np.random.default_rng(0)
    lim = robot.limits
    for _ in range(200):
        q = rng.uniform(lim.position_min, lim.position_max)
        T_urdf, T_dh = robot.fk(q), dh_fk(q)
        assert np.max(np.abs(T_urdf[:3, 3] - T_dh[:3, 3])) <= 1e-6
        assert np.allclose(T_urdf[:3, :3], T_dh[:3, :3], atol=1e-9)


def test_limits_equal_published_table(robot):
    assert robot.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8))
    for kind, values in PUBLISHED.items():
        np.testing.assert_array_equal(getattr(robot.limits, kind), values, err_msg=kind)


def test_ready_pose_and_flange(robot):
    np.testing.assert_allclose(robot.ready_pose, [0, -math.pi / 4, 0, -3 * math.pi / 4, 0, math.pi / 2, math.pi / 4])
    # the well-known flange position of the Panda ready pose
    np.testing.assert_allclose(robot.fk(robot.ready_pose)[:3, 3], [0.30689, 0.0, 0.59028], atol=1e-4)


def test_jacobian_matches_finite_differences(robot):
    rng = np.random.default_rng(1)
    q = rng.uniform(robot.limits.position_min, robot.limits.position_max)
    J = robot.jacobian(q)
    eps = 1e-6
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        dp = (robot.fk(q + dq)[:3, 3] - robot.fk(q - dq)[:3, 3]) / (2 * eps)
        np.testing.assert_allclose(J[:3, i], dp, atol=1e-6)


def test_limits_are_read_only(robot):
    with pytest.raises(ValueError):
        robot.limits.velocity[0] = 100.0


def test_joint_index_names_both_sides(robot):
    names = list(robot.joint_names)
    np.testing.assert_array_equal(robot.joint_index(names[::-1]), np.arange(7)[::-1])
    with pytest.raises(ValueError, match="missing: \\['panda_joint7'\\].*unknown: \\['j7'\\]"):
        robot.joint_index(names[:6] + ["j7"])


def test_overrides_only_tighten(robot):
    tighter = robot.with_limit_overrides({"panda_joint1": {"max_velocity": 1.0, "min_position": -2.0}})
    assert tighter.limits.velocity[0] == 1.0 and tighter.limits.position_min[0] == -2.0
    assert robot.limits.velocity[0] == 2.175  # original untouched
    with pytest.raises(RobotDescriptionError, match="panda_joint1.*max_velocity.*looser"):
        robot.with_limit_overrides({"panda_joint1": {"max_velocity": 5.0}})
    with pytest.raises(RobotDescriptionError, match="unknown joint 'nope'"):
        robot.with_limit_overrides({"nope": {"max_velocity": 1.0}})
    with pytest.raises(RobotDescriptionError, match="unknown key 'max_speed'"):
        robot.with_limit_overrides({"panda_joint2": {"max_speed": 1.0}})


@pytest.fixture
def files(tmp_path):
    out = {}
    for name, src in (("urdf", resource("urdf", "panda.urdf")), ("srdf", resource("urdf", "panda.srdf")),
                      ("joint_limits", resource("config", "panda_joint_limits.yaml"))):
        dst = tmp_path / Path(src).name
        shutil.copy(src, dst)
        out[name] = dst
    return out


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_missing_file_is_named(files, tmp_path):
    with pytest.raises(RobotDescriptionError, match="nothere.urdf: file not found"):
        load_robot(urdf=tmp_path / "nothere.urdf", srdf=files["srdf"], joint_limits=files["joint_limits"])


@pytest.mark.parametrize("old,new,message", [
    ("</robot>", "", "panda.urdf: malformed XML"),
    ('<limit lower="-2.8973" upper="2.8973" velocity="2.175" effort="87"/>', "",
     "panda.urdf: <joint name='panda_joint1'> has no <limit> element"),
    ('velocity="2.61"', 'velocity="fast"', "panda.urdf: <joint name='panda_joint5'> <limit velocity='fast'>: not numbers"),
    ('<child link="panda_link8"/>', '<child link="panda_hand"/>', "no joint leads to link 'panda_link8'"),
])
def test_malformed_urdf_names_file_and_element(files, old, new, message):
    _edit(files["urdf"], old, new)
    with pytest.raises(RobotDescriptionError, match=message):
        load_robot(**files)


def test_malformed_joint_limits_names_key(files):
    _edit(files["joint_limits"], "max_jerk: 3750.0, ", "")
    with pytest.raises(RobotDescriptionError, match="panda_joint_limits.yaml: joint_limits/panda_joint2/max_jerk is missing"):
        load_robot(**files)


def test_joint_limits_may_not_loosen_urdf(files):
    # a URDF tighter than the published table: the YAML may not undo that (even within the table)
    _edit(files["urdf"], 'upper="-0.0698" velocity="2.175" effort="87"', 'upper="-0.0698" velocity="2.175" effort="80"')
    assert load_robot(**files).limits.effort[3] == 80.0
    _edit(files["joint_limits"], "panda_joint4: {", "panda_joint4: {max_effort: 85.0, ")
    with pytest.raises(RobotDescriptionError, match="panda_joint4' key 'max_effort'=85.0 is looser"):
        load_robot(**files)


def test_srdf_ready_pose_must_name_robot_joints(files):
    _edit(files["srdf"], 'name="panda_joint7" value', 'name="joint7" value')
    with pytest.raises(RobotDescriptionError, match="panda.srdf: <group_state name='ready'> names unknown joint 'joint7'"):
        load_robot(**files)
