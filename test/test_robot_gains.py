"""The controller's impedance gains belong to the robot description, once, and fit its limits.

With Franka's example damping (50 N m s/rad on joints 1-4) holding the measured position from
full speed needs 108.75 N m against the 87 N m effort limit: loading refuses that, and a
stiffness so small that the shield's torque prediction sees nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from simreal_ros.resources import resource
from simreal_ros.robot import RobotDescriptionError, load_robot


@pytest.fixture
def files(tmp_path):
    out = {}
    for name, src in (("urdf", resource("urdf", "panda.urdf")), ("srdf", resource("urdf", "panda.srdf")),
                      ("joint_limits", resource("config", "panda_joint_limits.yaml")),
                      ("impedance", resource("config", "panda_impedance.yaml"))):
        dst = tmp_path / Path(src).name
        shutil.copy(src, dst)
        out[name] = dst
    return out


def _set(path: Path, joint: str, stiffness, damping) -> None:
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.strip().startswith(f"{joint}:"))
    lines[i] = f"  {joint}: {{stiffness: {stiffness}, damping: {damping}}}"
    path.write_text("\n".join(lines) + "\n")


def _refused(files, *parts: str) -> str:
    with pytest.raises(RobotDescriptionError) as info:
        load_robot(**files)
    msg = str(info.value)
    for p in parts:
        assert p in msg, f"{p!r} missing from: {msg}"
    return msg


def test_shipped_gains_are_read_only_arrays_that_fit_the_limits():
    from simreal_ros.robot import ImpedanceGains

    robot = load_robot()
    g = robot.gains
    assert isinstance(g, ImpedanceGains)
    for arr in (g.stiffness, g.damping):
        assert arr.dtype == float and arr.shape == (robot.n_joints,)
        with pytest.raises(ValueError):
            arr[0] = 1.0
    lim = robot.limits
    # braking from full speed within the torque limit, with margin
    assert np.all(g.damping * lim.velocity <= 0.9 * lim.effort), g.damping * lim.velocity
    assert np.all(g.stiffness >= 1.0) and np.all(g.damping >= 0.0)
    assert Path(robot.source["impedance"]).name == "panda_impedance.yaml"


def test_franka_example_damping_is_refused_naming_file_joint_and_values(files):
    _set(files["impedance"], "panda_joint1", 600.0, 50.0)
    _refused(files, "panda_impedance.yaml", "panda_joint1", "damping = 50.0", "2.175", "108.75", "87.0")


def test_wrist_damping_beyond_the_torque_limit_is_refused(files):
    _set(files["impedance"], "panda_joint5", 250.0, 30.0)
    _refused(files, "panda_impedance.yaml", "panda_joint5", "30.0", "78.3", "12.0")


@pytest.mark.parametrize("stiffness", ["1.0e-3", "0.5", "0.0", "-600.0", "1.0e7"])
def test_implausible_stiffness_is_refused_with_the_reason(files, stiffness):
    _set(files["impedance"], "panda_joint2", stiffness, 35.0)
    _refused(files, "panda_impedance.yaml", "panda_joint2", "stiffness", repr(float(stiffness)), "outside [1, 10000]")


def test_negative_damping_is_refused(files):
    _set(files["impedance"], "panda_joint3", 600.0, -1.0)
    _refused(files, "panda_impedance.yaml", "panda_joint3", "damping = -1.0", ">= 0")


@pytest.mark.parametrize("value,shown", [('"35"', "'35'"), ("true", "True"), ("null", "None")])
def test_non_numeric_gain_is_refused(files, value, shown):
    _set(files["impedance"], "panda_joint4", 600.0, value)
    _refused(files, "panda_impedance.yaml", "panda_joint4", "damping", shown, "not a number")


def test_duplicate_missing_and_unknown_joints_are_refused(files):
    text = files["impedance"].read_text()
    files["impedance"].write_text(text + "  panda_joint1: {stiffness: 600.0, damping: 20.0}\n")
    _refused(files, "panda_impedance.yaml", "duplicate key 'panda_joint1'")
    files["impedance"].write_text(text.replace("  panda_joint7:", "  # panda_joint7:"))
    _refused(files, "panda_impedance.yaml", "panda_joint7")
    files["impedance"].write_text(text + "  panda_joint8: {stiffness: 600.0, damping: 20.0}\n")
    _refused(files, "panda_impedance.yaml", "unknown joint", "panda_joint8")


def test_a_tighter_velocity_limit_admits_more_damping(files):
    # damping x velocity limit <= effort limit is checked on the final (tightened) limits
    _set(files["impedance"], "panda_joint1", 600.0, 50.0)
    text = files["joint_limits"].read_text()
    files["joint_limits"].write_text(text.replace("panda_joint1: {", "panda_joint1: {max_velocity: 1.5, "))
    robot = load_robot(**files)
    assert robot.gains.damping[0] == 50.0 and robot.limits.velocity[0] == 1.5


def test_the_simulated_arm_runs_with_the_description_gains(files):
    from simreal_ros.sim.arm import ArmSim

    _set(files["impedance"], "panda_joint2", 400.0, 30.0)
    robot = load_robot(**files)
    arm = ArmSim(robot=robot, seed=0)
    a = arm.sim.actuator_ids
    np.testing.assert_array_equal(-arm.model.actuator_biasprm[a, 1], robot.gains.stiffness)
    np.testing.assert_array_equal(-arm.model.actuator_biasprm[a, 2], robot.gains.damping)
    np.testing.assert_array_equal(arm.model.actuator_gainprm[a, 0], robot.gains.stiffness)
    assert arm.config.stiffness[1] == 400.0 and arm.config.damping[1] == 30.0
    default = ArmSim(seed=0)
    np.testing.assert_array_equal(default.config.damping, load_robot().gains.damping)


def test_braking_from_full_speed_stays_within_the_effort_limit():
    """In the sim: every joint at its velocity limit, target = the measured position. The
    impedance controller's demanded torque K (q0 - q) - D dq stays within the effort limit."""
    import mujoco

    from simreal_ros.sim.arm import ArmSim

    arm = ArmSim(seed=0)
    robot, lim = arm.robot, arm.robot.limits
    arm.data.qvel[arm.sim.dof_adr] = lim.velocity
    mujoco.mj_forward(arm.model, arm.data)
    q0 = arm.true_state().position.copy()
    arm.set_command(q0)
    peak = np.zeros(robot.n_joints)
    for _ in range(500):
        arm.advance(0.002)
        s = arm.true_state()
        # the gains the sim runs with (robot.gains; read from the config so this also runs on old code)
        demanded = np.asarray(arm.config.stiffness) * (q0 - s.position) - np.asarray(arm.config.damping) * s.velocity
        peak = np.maximum(peak, np.abs(demanded))
    assert np.all(peak <= lim.effort), peak / lim.effort
    assert np.max(np.abs(arm.true_state().velocity)) < 0.05  # it did stop
