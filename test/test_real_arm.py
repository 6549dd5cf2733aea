"""A hidden "real" arm file: exact values applied at every reset of the real MuJoCo arm, the
link inertias exactly as MuJoCo's own compiler places a full inertia tensor, and one clear
line for every bad file."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

from simreal_ros.robot import load_robot
from simreal_ros.robot.mujoco_model import build_spec
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.driver import DriverConfig, SimDriver
from simreal_ros.sim.randomize import load_ranges
from simreal_ros.sim.real_arm import RealArmError, load_real_arm

ROBOT = load_robot()
HIDDEN = Path(__file__).parent / "data" / "hidden_arm.yaml"


def _tensor(moments, quat) -> np.ndarray:
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, np.asarray(quat, float))
    rot = rot.reshape(3, 3)
    return rot @ np.diag(moments) @ rot.T


def test_hidden_values_are_applied_at_every_reset_without_compounding():
    arm = load_real_arm(HIDDEN, ROBOT)
    sim = ArmSim(ArmSimConfig(real_arm=arm), seed=3)
    for _ in range(2):  # the constructor's reset and another one
        sim.reset()
        m, dof = sim.model, sim.sim.dof_adr
        np.testing.assert_allclose(m.dof_frictionloss[dof], [1.5, 1.5, 1.2, 1.2, 0.6, 0.6, 0.4])
        np.testing.assert_allclose(m.dof_damping[dof], [1.5, 1.5, 1.0, 1.0, 0.3, 0.3, 0.2])
        np.testing.assert_allclose(m.dof_armature[dof], 0.0)
        assert m.body_mass[sim.sim.payload_body] == pytest.approx(1.5)
        assert sim.draw.action_latency == 0.01 and sim.draw.observation_latency == 0.0
        np.testing.assert_allclose(m.body_mass[sim.sim.link_bodies],
                                   [2.7, 2.7, 2.4, 2.4, 2.6, 1.5, 0.5])
    # the encoder bias is in every measurement (no noise configured): measured - true
    sim.advance(0.01)
    meas = sim.pop_measurements()[-1]
    np.testing.assert_allclose(meas.position - sim.true_state().position, arm.draw.position_bias, atol=1e-12)


def test_link_inertias_are_placed_as_mujocos_compiler_places_a_full_tensor():
    arm = load_real_arm(HIDDEN, ROBOT)
    sim = ArmSim(ArmSimConfig(real_arm=arm))
    spec = build_spec(ROBOT)
    for name, link in arm.links.items():
        body = spec.body(name)
        body.explicitinertial = True
        body.mass, body.ipos, body.fullinertia = link.mass, list(link.com), list(link.inertia)
    ref = spec.compile()
    for name, link in arm.links.items():
        ours = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, name)
        theirs = mujoco.mj_name2id(ref, mujoco.mjtObj.mjOBJ_BODY, name)
        assert sim.model.body_mass[ours] == pytest.approx(ref.body_mass[theirs])
        np.testing.assert_allclose(sim.model.body_ipos[ours], ref.body_ipos[theirs], atol=1e-12)
        np.testing.assert_allclose(_tensor(sim.model.body_inertia[ours], sim.model.body_iquat[ours]),
                                   _tensor(ref.body_inertia[theirs], ref.body_iquat[theirs]), atol=1e-9)
        ixx, iyy, izz, ixy, ixz, iyz = link.inertia  # and it is the tensor of the file
        np.testing.assert_allclose(_tensor(sim.model.body_inertia[ours], sim.model.body_iquat[ours]),
                                   [[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]], atol=1e-9)


def test_the_arm_moves_differently_from_the_nominal_one():
    """Same commands, nominal vs hidden arm: the hidden one lags and sags (the data can tell them apart)."""
    finals = []
    for real in (None, load_real_arm(HIDDEN, ROBOT)):
        sim = ArmSim(ArmSimConfig(real_arm=real))
        target = ROBOT.ready_pose + np.array([0.3, 0.2, -0.2, 0.2, 0.3, 0.2, 0.3])
        sim.set_command(target)
        sim.advance(0.5)
        finals.append(sim.true_state().position)
    assert np.max(np.abs(finals[0] - finals[1])) > 0.01


def test_the_sim_driver_takes_the_file_as_its_real_arm_setting():
    drv = SimDriver(DriverConfig(timing="unpaced", real_arm=str(HIDDEN)))
    assert drv.arm.draw.payload_mass == 1.5
    drv.reset()
    assert drv.arm.draw.payload_mass == 1.5 and drv.arm.model.dof_frictionloss[drv.arm.sim.dof_adr][0] == 1.5
    with pytest.raises(ValueError, match="cannot be combined with randomization ranges"):
        SimDriver(DriverConfig(timing="unpaced", real_arm=str(HIDDEN), ranges=load_ranges(profile="default")))


BAD = [
    ("arm: {joint_friction: 1.0}\nfloor: {friction: 0.3}\n", r"unknown section\(s\) \['floor'\]"),
    ("joint_friction: 1.0\n", "needs a top-level 'arm' and/or 'table' mapping"),
    ("arm: {friction: 1.0}\n", r"arm: unknown key\(s\) \['friction'\]"),
    ("arm: {joint_friction: -0.5}\n", r"arm.joint_friction = -0.5: outside \[0, inf\]"),
    ("arm: {joint_damping: [1, 2, 3]}\n", "arm.joint_damping = .*expected one number or 7 numbers"),
    ("arm: {payload_mass: '1.5'}\n", "arm.payload_mass = '1.5': not a finite number"),
    ("arm: {action_latency: .nan}\n", "arm.action_latency = nan: not a finite number"),
    ("arm: {drop_probability: 2.0}\n", r"arm.drop_probability = 2.0: outside \[0, 1\]"),
    ("arm: {position_bias: [0, 0, 0, 0, 0, 0, true]}\n", r"arm.position_bias\[6\] = True: not a finite number"),
    ("arm: {links: {panda_link9: {mass: 1, com: [0, 0, 0], inertia: [1, 1, 1, 0, 0, 0]}}}\n",
     "arm.links.panda_link9: not a moving link"),
    ("arm: {links: {panda_link2: {mass: 1, com: [0, 0, 0]}}}\n", "panda_link2: needs exactly the keys"),
    ("arm: {links: {panda_link2: {mass: 1, com: [0, 0, 0], inertia: [1, 1, 5, 0, 0, 0]}}}\n",
     "panda_link2.inertia = .*not a physical inertia"),
    ("arm: {links: {panda_link2: {mass: 0, com: [0, 0, 0], inertia: [1, 1, 1, 0, 0, 0]}}}\n",
     "panda_link2.mass = 0: outside"),
    ("arm: {payload_mass: 1.0, payload_mass: 2.0}\n", "duplicate key 'payload_mass'"),
    ("arm: {payload_mass: [1.0\n", "malformed YAML"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "real.yaml"
    path.write_text(text)
    with pytest.raises(RealArmError, match=message) as info:
        load_real_arm(path, ROBOT)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_missing_file_or_a_directory_is_named(tmp_path):
    with pytest.raises(RealArmError, match="no such hidden-arm file"):
        load_real_arm(tmp_path / "nope.yaml", ROBOT)
    with pytest.raises(RealArmError, match="is a directory"):
        load_real_arm(tmp_path, ROBOT)


@pytest.mark.ros
def test_the_sim_bridge_refuses_to_start_on_a_bad_file_naming_the_key(processes, tmp_path):
    bad = tmp_path / "real.yaml"
    bad.write_text("arm: {joint_friction: -1.0}\n")
    proc = processes.start("-m", "simreal_ros.nodes.sim_bridge_node", "--ros-args", "-p", f"real_arm:={bad}",
                           name="bridge")
    assert proc.wait(60) == 1
    out = processes.output(proc)
    assert "refusing to start" in out and f"{bad}: arm.joint_friction = -1.0" in out, out
    assert "Traceback" not in out
