"""The randomization format a calibration needs: per-joint intervals, signed per-joint bias, the
payload's centre of mass, link inertia overrides, and a calibration file as a profile."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simreal_ros.calibrate.simsession import SHAPE_BASED_INERTIA
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import RandomizationRanges, load_ranges

N = 7
# other inertias than the URDF's, with products of inertia (the randomizer writes principal axes)
OTHER_INERTIA = {k: (m, c, (*i[:3], 0.1 * min(i[0], i[1]), -0.05 * min(i[0], i[2]), 0.05 * min(i[1], i[2])))
                 for k, (m, c, i) in SHAPE_BASED_INERTIA.items()}


def calibrated(**dyn) -> dict:
    return {"dynamics": {"joint_friction": [[0.1 * i, 0.1 * i + 0.01] for i in range(1, N + 1)],
                         "payload_mass": [1.4, 1.6], "payload_com": [[0.01, 0.01], [-0.02, -0.02], [0.0, 0.0]],
                         "link_inertia": {k: {"mass": m, "com": list(c), "inertia": list(i)}
                                          for k, (m, c, i) in OTHER_INERTIA.items()}, **dyn},
            "sensor": {"position_bias": [[-0.0012, -0.0008]] * N, "action_latency": [0.009, 0.011]}}


def test_per_joint_signed_and_link_overrides_reach_the_model():
    sim = ArmSim(ArmSimConfig(ranges=RandomizationRanges.from_dict(calibrated())), seed=0)
    links = sim.sim.link_bodies
    for seed in range(4):
        d = sim.reset(seed=seed)
        f = sim.model.dof_frictionloss[sim.sim.dof_adr]
        assert np.all((f >= 0.1 * np.arange(1, N + 1) - 1e-12) & (f <= 0.1 * np.arange(1, N + 1) + 0.01 + 1e-12))
        assert np.all((d.position_bias >= -0.0012) & (d.position_bias <= -0.0008))  # negative: signed, per joint
        pb = sim.sim.payload_body
        assert sim.model.body_ipos[pb] == pytest.approx(sim.nominal.body_ipos[pb] + [0.01, -0.02, 0.0])
        masses = [m for m, _, _ in OTHER_INERTIA.values()]
        assert sim.model.body_mass[links] == pytest.approx(masses)
        # the full inertia about the com is the given one (principal axes written by randomize)
        for k, (_, com, (ixx, iyy, izz, ixy, ixz, iyz)) in enumerate(OTHER_INERTIA.values()):
            b = links[k]
            rot = np.zeros(9)
            import mujoco
            mujoco.mju_quat2Mat(rot, sim.model.body_iquat[b])
            rot = rot.reshape(3, 3)
            full = rot @ np.diag(sim.model.body_inertia[b]) @ rot.T
            assert full == pytest.approx(np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]]), abs=1e-9)
            assert sim.model.body_ipos[b] == pytest.approx(com)


def test_bad_calibrated_profiles_name_what_is_wrong():
    bad = calibrated(joint_friction=[[0.1, 0.2]] * 3)
    with pytest.raises(ValueError, match="3 per-joint intervals for 7 joints"):
        ArmSim(ArmSimConfig(ranges=RandomizationRanges.from_dict(bad)))
    bad = calibrated(link_inertia={"panda_link2": {"mass": 1.0, "com": [0, 0, 0], "inertia": [1, 1, 5, 0, 0, 0]}})
    with pytest.raises(ValueError, match="not physical"):
        RandomizationRanges.from_dict(bad)
    bad = calibrated(link_inertia={"panda_hand": {"mass": 1.0, "com": [0, 0, 0], "inertia": [1, 1, 1, 0, 0, 0]}})
    with pytest.raises(ValueError, match="not a moving link"):
        ArmSim(ArmSimConfig(ranges=RandomizationRanges.from_dict(bad)))
    with pytest.raises(ValueError, match=r"joint_friction\[1\]"):
        RandomizationRanges.from_dict(calibrated(joint_friction=[[0.1, 0.2], [0.3, 0.1]] + [[0, 0]] * 5))


def test_a_calibration_file_is_a_profile(tmp_path):
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump({"calibration": {"note": "x"}, "randomization": calibrated()}))
    ranges = load_ranges(profile=str(path))
    assert ranges.dynamics.payload_mass == (1.4, 1.6)
    other = tmp_path / "other.yaml"
    other.write_text("profiles: {}\n")
    with pytest.raises(ValueError, match="not a calibration"):
        load_ranges(profile=str(other))
    with pytest.raises(ValueError, match="randomization profile file"):
        load_ranges(profile=str(tmp_path / "missing.yaml"))
    # the shipped profiles are unchanged
    assert load_ranges(profile="default").dynamics.joint_friction == (0.0, 0.5)
