"""Config cannot loosen the robot's safety limits: the manufacturer's published limits are the
ceiling, and every limit is a real number given once.

Each case edits a copy of the shipped description files (in ``tmp_path``) the way a careless or
hostile edit would, and loading must refuse it naming the file, the joint, the key and both values.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from simreal_ros.resources import resource
from simreal_ros.robot import RobotDescriptionError, load_robot

# Franka's published Panda table (shared/robot_facts.md), typed here only to check the data file.
PUBLISHED = {
    "position_max": [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973],
    "position_min": [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973],
    "velocity": [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61],
    "acceleration": [15, 7.5, 10, 12.5, 15, 20, 20],
    "jerk": [7500, 3750, 5000, 6250, 7500, 10000, 10000],
    "effort": [87, 87, 87, 87, 12, 12, 12],
    "effort_rate": [1000] * 7,
}

JL_LINE = ("panda_joint2: {has_acceleration_limits: true, max_acceleration: 7.5, has_jerk_limits: true, "
           "max_jerk: 3750.0, has_effort_rate_limits: true, max_effort_rate: 1000.0}")


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
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _refused(files, *parts: str) -> str:
    """Load, expect a refusal whose message contains every one of ``parts`` (literally)."""
    with pytest.raises(RobotDescriptionError) as info:
        load_robot(**files)
    msg = str(info.value)
    for p in parts:
        assert p in msg, f"{p!r} missing from: {msg}"
    assert "\n" not in msg.strip()  # one line
    return msg


def test_shipped_files_load_with_the_published_limits():
    robot = load_robot()
    for kind, values in PUBLISHED.items():
        np.testing.assert_array_equal(getattr(robot.limits, kind), values, err_msg=kind)
    assert Path(robot.source["published_limits"]).name == "panda_published_limits.yaml"


@pytest.mark.parametrize("old,new,key,value,published", [
    ("max_acceleration: 7.5,", "max_acceleration: 1e9,", "max_acceleration", "1000000000.0", "7.5"),
    ("max_jerk: 3750.0,", "max_jerk: 1e12,", "max_jerk", "1000000000000.0", "3750.0"),
    ("max_effort_rate: 1000.0}", "max_effort_rate: 1e9}", "max_effort_rate", "1000000000.0", "1000.0"),
    ("max_acceleration: 7.5,", "max_acceleration: 7.5000001,", "max_acceleration", "7.5000001", "7.5"),
])
def test_joint_limits_yaml_looser_than_published_is_refused(files, old, new, key, value, published):
    _edit(files["joint_limits"], JL_LINE, JL_LINE.replace(old, new))
    msg = _refused(files, "panda_joint_limits.yaml", "panda_joint2", key, value, published)
    assert "panda_published_limits.yaml" in msg


@pytest.mark.parametrize("attr,value,key,published", [
    ("velocity", "1e9", "max_velocity", "2.175"),
    ("upper", "100", "max_position", "1.7628"),
    ("lower", "-100", "min_position", "-1.7628"),
    ("effort", "87.5", "max_effort", "87.0"),
])
def test_urdf_looser_than_published_is_refused(files, attr, value, key, published):
    old = '<limit lower="-1.7628" upper="1.7628" velocity="2.175" effort="87"/>'
    new = re.sub(f'{attr}="[^"]*"', f'{attr}="{value}"', old)
    _edit(files["urdf"], old, new)
    _refused(files, "panda.urdf", "panda_joint2", attr, value, key, published)


@pytest.mark.parametrize("literal,shown", [('"14"', "'14'"), ("true", "True"), ("[15.0]", "[15.0]"), (".nan", "nan")])
def test_non_numeric_limit_is_refused(files, literal, shown):
    _edit(files["joint_limits"], JL_LINE, JL_LINE.replace("max_acceleration: 7.5,", f"max_acceleration: {literal},"))
    _refused(files, "panda_joint_limits.yaml", "panda_joint2", "max_acceleration", shown)


@pytest.mark.parametrize("value", ["0.0", "-1.0"])
def test_zero_or_negative_yaml_limit_names_joint_and_file(files, value):
    _edit(files["joint_limits"], JL_LINE, JL_LINE.replace("max_jerk: 3750.0,", f"max_jerk: {value},"))
    _refused(files, "panda_joint_limits.yaml", "panda_joint2", "max_jerk", value, "> 0")


@pytest.mark.parametrize("attr,value", [("velocity", "0"), ("effort", "-1")])
def test_zero_or_negative_urdf_limit_names_joint_and_file(files, attr, value):
    old = '<limit lower="-2.8973" upper="2.8973" velocity="2.61" effort="12"/>\n  </joint>\n  <joint name="panda_joint6"'
    cur = "2.61" if attr == "velocity" else "12"
    _edit(files["urdf"], old, old.replace(f'{attr}="{cur}"', f'{attr}="{value}"'))
    _refused(files, "panda.urdf", "panda_joint5", attr, value, "> 0")


def test_inverted_position_range_names_joint_and_file(files):
    _edit(files["joint_limits"], JL_LINE, JL_LINE.replace("{", "{min_position: 1.0, max_position: 0.5, "))
    _refused(files, "panda_joint_limits.yaml", "panda_joint2", "min_position", "1.0", "0.5")


def test_duplicate_joint_entry_in_yaml_is_refused_naming_key_and_lines(files):
    text = files["joint_limits"].read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("panda_joint2:")) + 1
    looser = "  " + JL_LINE.replace("max_acceleration: 7.5,", "max_acceleration: 15.0,")
    files["joint_limits"].write_text(text + looser + "\n")  # the last would silently win
    second = len(lines) + 1
    _refused(files, "panda_joint_limits.yaml", "duplicate key 'panda_joint2'", f"line {second}", f"line {first}")


def test_duplicate_key_inside_a_joint_entry_is_refused(files):
    _edit(files["joint_limits"], JL_LINE, JL_LINE.replace("max_jerk: 3750.0,", "max_jerk: 3750.0, max_jerk: 37500.0,"))
    _refused(files, "panda_joint_limits.yaml", "duplicate key 'max_jerk'", "3750.0", "37500.0")


def test_switching_a_limit_off_is_refused(files):
    _edit(files["joint_limits"], JL_LINE, JL_LINE.replace("has_jerk_limits: true", "has_jerk_limits: false"))
    _refused(files, "panda_joint_limits.yaml", "panda_joint2", "has_jerk_limits")


def test_duplicate_urdf_joint_is_refused(files):
    text = files["urdf"].read_text()
    start = text.index('  <joint name="panda_joint3"')
    end = text.index("</joint>", start) + len("</joint>\n")
    block = text[start:end].replace('velocity="2.175"', 'velocity="1e9"')
    files["urdf"].write_text(text[:end] + block + text[end:])
    _refused(files, "panda.urdf", "duplicate <joint name='panda_joint3'>")


def test_duplicate_urdf_link_is_refused(files):
    _edit(files["urdf"], '<link name="panda_link0">', '<link name="panda_link0"/>\n  <link name="panda_link0">')
    _refused(files, "panda.urdf", "duplicate <link name='panda_link0'>")


def test_published_limits_file_is_itself_checked(files, tmp_path):
    pub = tmp_path / "published.yaml"
    shutil.copy(resource("urdf", "panda_published_limits.yaml"), pub)
    text = pub.read_text()
    pub.write_text(re.sub(r"(panda_joint7:.*?)max_jerk: 10000\.0", r'\1max_jerk: "10000"', text, count=1))
    with pytest.raises(RobotDescriptionError, match=r"published\.yaml.*panda_joint7.*max_jerk.*not a number"):
        load_robot(published_limits=pub, **files)
    pub.write_text(re.sub(r"\n\s*panda_joint7:[^\n]*", "", text))
    with pytest.raises(RobotDescriptionError, match=r"published\.yaml.*panda_joint7"):
        load_robot(published_limits=pub, **files)


def test_simreal_robot_refuses_a_loosened_description_with_exit_2_and_one_line(tmp_path):
    import os
    import subprocess
    import sys

    share = tmp_path / "share"
    for d in ("urdf", "config"):
        shutil.copytree(resource(d), share / d)
    jl = share / "config" / "panda_joint_limits.yaml"
    jl.write_text(jl.read_text().replace("max_jerk: 3750.0", "max_jerk: 1e12"))
    code = ("import argparse, sys\nfrom simreal_ros.robot import cli\n"
            "sys.exit(cli.run(argparse.Namespace(name='panda', json=False)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SIMREAL_ROS_SHARE": str(share)})
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "panda_joint_limits.yaml" in out.stderr and "panda_joint2" in out.stderr and "max_jerk" in out.stderr
