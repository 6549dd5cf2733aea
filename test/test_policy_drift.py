"""Drift monitors (ROS-free core): observation/action windows against training statistics, progress."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simreal_ros.policy.bundle import load_bundle
from simreal_ros.policy.drift import DriftMonitor, action_statistics
from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
from simreal_ros.policy.onnx_linear import write_linear_bundle
from simreal_ros.robot import load_robot

SLICES = {"a": slice(0, 3), "goal_delta": slice(3, 6)}
MEAN = np.array([0.1, -0.2, 0.3, 0.0, 0.0, 0.0])
STD = np.array([0.5, 0.1, 2.0, 0.2, 0.2, 0.2])


def monitor(**kw) -> DriftMonitor:
    kw = {"window": 10, "obs_threshold": 4.0, "min_count": 5, "progress_window": 0, **kw}
    return DriftMonitor(SLICES, MEAN, STD, **kw)


def test_in_distribution_observations_raise_nothing():
    rng = np.random.default_rng(0)
    m = monitor(window=40, min_count=20)
    for _ in range(5000):
        r = m.update(MEAN + STD * rng.standard_normal(6), None)
        assert not r.raised
    assert m.alarms == 0 and r.obs_score < 2.0 and r.action_score is None


@settings(max_examples=80, deadline=None)
@given(k=st.floats(4.05, 100.0), dim=st.integers(0, 5), window=st.integers(1, 30), min_count=st.integers(1, 30),
       sign=st.sampled_from([-1.0, 1.0]))
def test_a_sustained_shift_raises_exactly_once_after_window_and_min_count(k, dim, window, min_count, sign):
    m = monitor(window=window, min_count=min_count)
    obs = MEAN.copy()
    obs[dim] += sign * k * STD[dim]
    raised = [i for i in range(window + min_count + 50) if m.update(obs, None).raised]
    assert raised == [window + min_count - 2]  # 0-based: the window is full at window-1, then min_count cycles
    term = "a" if dim < 3 else "goal_delta"
    assert f"term '{term}'" in m.last_reason and "observation window mean" in m.last_reason


@settings(max_examples=60, deadline=None)
@given(k=st.floats(0.0, 3.99), dim=st.integers(0, 5), n=st.integers(1, 200))
def test_a_shift_below_the_threshold_never_raises(k, dim, n):
    m = monitor()
    obs = MEAN.copy()
    obs[dim] += k * STD[dim]
    assert not any(m.update(obs, None).raised for _ in range(n))


def test_the_alarm_clears_with_hysteresis_and_reset_empties_the_window():
    m = monitor(window=4, min_count=2)
    far = MEAN + 10 * STD
    assert [m.update(far, None).raised for _ in range(6)] == [False, False, False, False, True, False]
    assert m.sustained
    for _ in range(4):  # back in distribution: the window empties of the shifted values
        m.update(MEAN, None)
    assert not m.sustained and m.alarms == 1
    m.update(far, None)
    m.reset()
    assert m.update(far, None).obs_score is None  # the window restarts


def test_action_drift_needs_training_statistics():
    stats = action_statistics({"action_statistics": {"mean": [0.0, 0.0], "std": [0.3, 0.3]}}, 2)
    assert stats is not None
    for bad in ({}, {"action_statistics": {"mean": [0.0], "std": [0.3]}},
                {"action_statistics": {"mean": [0.0, 0.0], "std": [0.3, 0.0]}},
                {"action_statistics": {"mean": "x", "std": [1, 1]}}):
        assert action_statistics(bad, 2) is None
    m = monitor(action_stats=stats, action_threshold=3.0)
    raised = [i for i in range(30) if m.update(MEAN, np.array([1.0, 0.0])).raised]  # pinned at the bound: 3.3 std
    assert raised == [13] and "action window mean 3.3" in m.last_reason
    m2 = monitor()
    assert m2.update(MEAN, np.array([1.0, 0.0])).action_score is None


def _at_distance(d: float) -> np.ndarray:
    obs = MEAN.copy()
    obs[3:6] = [d, 0.0, 0.0]
    return obs


def test_no_progress_far_from_the_goal_raises_after_the_progress_window():
    m = monitor(progress_window=20, progress_min_decrease=0.01, progress_tolerance=0.03)
    raised = [i for i in range(60) if m.update(_at_distance(0.2), None).raised]
    assert raised == [20] and "no progress: distance to the goal 0.200 m" in m.last_reason
    # steady progress (1 mm per cycle: 2 cm per window) and standing at the goal raise nothing
    m = monitor(progress_window=20, progress_min_decrease=0.01, progress_tolerance=0.03)
    assert not any(m.update(_at_distance(0.3 - 0.001 * i), None).raised for i in range(250))
    assert not any(m.update(_at_distance(0.02), None).raised for _ in range(100))
    # oscillating without getting closer is no progress
    m = monitor(progress_window=20, progress_min_decrease=0.01, progress_tolerance=0.03)
    assert any(m.update(_at_distance(0.2 + 0.05 * (i % 2)), None).raised for i in range(40))


@settings(max_examples=40, deadline=None)
@given(w=st.integers(1, 50), d=st.floats(0.031, 2.0))
def test_progress_alarm_comes_exactly_after_the_window(w, d):
    m = monitor(progress_window=w, progress_min_decrease=0.005, progress_tolerance=0.03, obs_threshold=1000.0)
    assert [i for i in range(w + 10) if m.update(_at_distance(d), None).raised] == [w]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="window"):
        monitor(window=0)
    from simreal_ros.settings import SettingError

    with pytest.raises(SettingError, match="drift_obs_threshold"):
        ExecutorConfig(drift_obs_threshold=0.0)


def test_executor_reverts_with_the_drift_reason_when_the_arm_does_not_get_closer(tmp_path):
    robot = load_robot()
    bundle = load_bundle(write_linear_bundle(tmp_path / "b", robot, gain=0.0), robot)  # a policy that never moves
    ex = PolicyExecutor(bundle, robot, ExecutorConfig(compute_deadline=1e9, progress_window=30, ood_revert=False))
    q = robot.ready_pose.copy()
    flange = robot.fk(q)[:3, 3]
    ex.set_goal(flange + [0.2, 0.0, 0.0])
    reverts = []
    for k in range(60):
        ex.update_state(q, np.zeros(7), 0.05 * k)
        res = ex.step(0.05 * k)
        assert res.command is not None
        if res.revert_reason:
            reverts.append((k, res.revert_reason))
    assert [k for k, _ in reverts] == [30]
    assert "drift: no progress: distance to the goal 0.200 m" in reverts[0][1] and "'linear_policy'" in reverts[0][1]
    s = ex.stats()
    assert s["drift_alarms"] == 1 and s["drift_progress_stalled"] == 1 and s["revert_requests"] == 1
    ex.set_goal(flange + [0.0, 0.2, 0.0])  # a new goal starts the progress history over
    ex.update_state(q, np.zeros(7), 10.0)
    assert ex.step(10.0).drift.progress_stalled is False and not ex.drift.sustained


@pytest.mark.parametrize("name", ["push_default", "reach_default"])
def test_shipped_bundles_carry_their_action_statistics_and_the_action_drift_term_is_active(name):
    """The shipped bundles' provenance.action_statistics are what simreal train's own recording
    (training.action_stats, the seed/episodes/profile they name) gives, and the executor's drift
    monitor watches their actions: a policy pinned at one action bound drifts there. "Gives" within
    a tolerance: the episodes are deterministic on one set of wheels, but where a push episode ends
    is chaotic in the floats (a fresh venv of 2026-12-02 gave 240 samples for push_default's
    recorded 235, run after run; the float kinematics of 2026-12-03, equal to the numpy ones within
    4e-16, give 250: one of the 10 episodes 15 cycles longer, mean and std still within 0.06 std), so a
    few cycles more or less move the figures slightly. The statistics are what the drift monitor
    uses; the sample count only has to be of the same run (within 10 %)."""
    from simreal_ros.resources import resource
    from simreal_ros.training.action_stats import action_statistics_of

    robot = load_robot()
    bundle = load_bundle(resource("policies", name), robot)
    stats = bundle.manifest.provenance["action_statistics"]
    again = action_statistics_of(bundle.directory, stats["episodes"], stats["profile"], stats["seed"])
    assert abs(again["samples"] - stats["samples"]) <= 0.1 * stats["samples"], (again["samples"], stats["samples"])
    std = np.asarray(stats["std"])
    assert np.all(np.abs(np.asarray(again["mean"]) - stats["mean"]) <= 0.1 * std), (again["mean"], stats["mean"])
    assert np.all(np.abs(np.asarray(again["std"]) - std) <= 0.1 * std), (again["std"], stats["std"])
    ex = PolicyExecutor(bundle, robot, ExecutorConfig())
    assert ex.drift.action_stats is not None and ex.stats()["drift_action_monitor"] == 1
    m = bundle.manifest
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    pinned = np.clip(mean - 4 * std, -m.action_clip, m.action_clip)  # as far from the training mean as the clip allows
    k = int(np.argmax(np.abs(pinned - mean) / std))
    assert abs(pinned[k] - mean[k]) / std[k] > ex.config.drift_action_threshold
    reports = [ex.drift.update(np.asarray(m.obs_mean), pinned) for _ in range(ex.config.drift_window + 40)]
    raised = [r for r in reports if r.raised]
    assert len(raised) == 1 and raised[0].monitors_over == ["action"] and "action window mean" in raised[0].reason
    # and the training actions themselves do not
    ex.drift.reset()
    assert not any(ex.drift.update(np.asarray(m.obs_mean), mean).raised for _ in range(ex.config.drift_window + 40))


def test_an_exploration_family_is_not_reverted_for_lack_of_progress(tmp_path):
    """A family's codes explore (issue 14): the same policy that never moves, declared as a family,
    runs on with its code; before, its first 80 cycles away from the goal latched the session
    onto the baseline (`simreal explore` then recorded the baseline, not the family)."""
    from simreal_ros.policy.observation import DEFAULT_TERMS

    robot = load_robot()
    bundle = load_bundle(write_linear_bundle(tmp_path / "f", robot, gain=0.0, terms=(*DEFAULT_TERMS, ("latent", 2))),
                         robot)
    ex = PolicyExecutor(bundle, robot, ExecutorConfig(compute_deadline=1e9, progress_window=30, ood_revert=False))
    ex.set_latent(1)
    q = robot.ready_pose.copy()
    ex.set_goal(robot.fk(q)[:3, 3] + [0.2, 0.0, 0.0])
    for k in range(100):
        ex.update_state(q, np.zeros(7), 0.05 * k)
        res = ex.step(0.05 * k)
        assert res.command is not None and not res.revert_reason
    s = ex.stats()
    assert s["commands"] == 100 and s["drift_progress_stalled"] == 0 and s["revert_requests"] == 0
