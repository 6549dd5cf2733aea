"""The identification excitation: smooth start, consistent derivatives, inside the robot's limits."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.robot import load_robot

ROBOT = load_robot()
CONFIGS = [ExcitationConfig(), ExcitationConfig(base_frequency=0.3, amplitude=0.6, limit_fraction=0.5),
           ExcitationConfig(base_frequency=2.0, amplitude=2.0, limit_fraction=0.9, harmonics=5)]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_stays_within_the_configured_fraction_of_every_limit(cfg):
    ex = ExcitationTrajectory(ROBOT, cfg, seed=3)
    t = np.arange(0.0, 30.0, 0.004)
    q, dq, ddq = map(np.array, zip(*(ex(ti) for ti in t)))
    lim, f = ROBOT.limits, cfg.limit_fraction
    room = np.minimum(ROBOT.ready_pose - lim.position_min, lim.position_max - ROBOT.ready_pose)
    assert np.all(np.abs(q - ROBOT.ready_pose) <= f * room + 1e-9)
    # the start ramp adds envelope derivative terms on top of the steady-state bounds
    steady = t >= cfg.ramp
    assert np.all(np.abs(dq[steady]) <= f * lim.velocity + 1e-9)
    assert np.all(np.abs(ddq[steady]) <= f * lim.acceleration + 1e-9)
    assert np.all(np.abs(dq) <= lim.velocity) and np.all(np.abs(ddq) <= lim.acceleration)


def test_starts_at_rest_at_the_center_and_derivatives_are_consistent():
    ex = ExcitationTrajectory(ROBOT, CONFIGS[1], seed=1)
    q0, dq0, ddq0 = ex(0.0)
    np.testing.assert_allclose(q0, ROBOT.ready_pose)
    np.testing.assert_allclose(dq0, 0.0)
    np.testing.assert_allclose(ddq0, 0.0)
    h = 1e-6
    for t in (0.3, 2.0, 17.5):
        q1, dq1, _ = ex(t - h)
        q2, dq2, _ = ex(t + h)
        _, dq, ddq = ex(t)
        np.testing.assert_allclose((q2 - q1) / (2 * h), dq, atol=1e-6)
        np.testing.assert_allclose((dq2 - dq1) / (2 * h), ddq, atol=1e-5)


def test_every_joint_moves_and_changes_direction():
    ex = ExcitationTrajectory(ROBOT, CONFIGS[1], seed=0)
    dq = np.array([ex(t)[1] for t in np.arange(1.0, 30.0, 0.01)])
    assert np.all(np.abs(dq).max(axis=0) > 0.3)
    assert np.all((np.diff(np.sign(dq), axis=0) != 0).sum(axis=0) >= 6)


def test_same_seed_same_trajectory_and_bad_config_is_refused():
    a, b = ExcitationTrajectory(ROBOT, seed=4), ExcitationTrajectory(ROBOT, seed=4)
    np.testing.assert_array_equal(a(3.3)[0], b(3.3)[0])
    with pytest.raises(ValueError, match="base_frequency"):
        ExcitationConfig(base_frequency=0.0)
    with pytest.raises(ValueError, match="harmonics"):
        ExcitationConfig(harmonics=0)
    with pytest.raises(ValueError, match="center"):
        ExcitationTrajectory(ROBOT, center=np.zeros(3))
