"""Executor core: same observation as training, commands by the manifest, skips counted, OOD alarms.

No torch: the shipped ONNX bundle (policies/reach_default) and small linear ONNX models
(:mod:`simreal_ros.policy.onnx_linear`) run on ONNX Runtime, as on the robot."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simreal_ros.policy.action import action_to_command, action_to_target
from simreal_ros.policy.bundle import load_bundle
from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
from simreal_ros.policy.observation import DEFAULT_TERMS, ObsInputs, build_observation
from simreal_ros.policy.onnx_linear import write_linear_bundle
from simreal_ros.policy.ood import OodMonitor
from simreal_ros.resources import resource
from simreal_ros.robot import load_robot
from simreal_ros.sim.env import ReachEnv

SHIPPED = resource("policies", "reach_default")
GOAL = np.array([0.45, 0.1, 0.45])


@pytest.fixture(scope="module")
def robot():
    return load_robot()


@pytest.fixture(scope="module")
def stats(robot):
    """Plausible training statistics: around the ready pose at rest, reaching GOAL."""
    x = ObsInputs(q=robot.ready_pose.copy(), dq=np.zeros(7), goal=GOAL, last_action=np.zeros(7))
    mean = build_observation(robot, DEFAULT_TERMS, x)
    return mean, np.full(mean.size, 0.2)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, robot, stats):
    return write_linear_bundle(tmp_path_factory.mktemp("b") / "onnx", robot, mean=stats[0], std=stats[1], seed=2)


@pytest.fixture
def executor(bundle_dir, robot):
    ex = PolicyExecutor(load_bundle(bundle_dir, robot), robot, ExecutorConfig(compute_deadline=1.0))
    ex.set_goal(GOAL)
    return ex


def test_observation_equals_the_training_envs_and_loop_runs_on_the_sim(robot):
    """The shipped policy driving the Reach env through the executor: the executor's observation
    is exactly what the env gives the policy in training, and every cycle yields a command."""
    executor = PolicyExecutor(load_bundle(SHIPPED, robot), robot, ExecutorConfig(compute_deadline=1.0))
    executor.set_goal(GOAL)
    env = ReachEnv(control_rate=executor.manifest.control_rate_hz, randomization="default",
                   action_max_change=executor.manifest.action_max_change)
    obs, info = env.reset(seed=3, options={"goal": GOAL})
    start = info["distance"]
    for _ in range(20):
        meas = env._last_meas
        executor.update_state(meas.position, meas.velocity, meas.stamp)
        res = executor.step(env.arm.time)
        assert res.command is not None, res.skipped
        np.testing.assert_allclose(res.observation.astype(np.float32), obs, atol=1e-6)
        obs, _, _, _, info = env.step(res.action)
    assert info["distance"] < 0.5 * start, (start, info["distance"])  # the trained policy reaches out to GOAL
    assert executor.commands == executor.cycles == 20
    assert sum(executor.skipped.values()) == 0
    env.close()


def test_command_is_the_manifest_action_applied_to_the_model_output(executor, robot):
    m = executor.manifest
    q = robot.ready_pose + 0.05
    executor.update_state(q, np.zeros(7), 1.0)
    res = executor.step(1.01)
    obs = build_observation(robot, m.term_names, ObsInputs(q=q, dq=np.zeros(7), goal=GOAL, last_action=np.zeros(7)))
    raw = executor.bundle.backend(m.normalize(obs))
    np.testing.assert_allclose(res.command, action_to_target(robot, q, raw, m.action_scale, m.action_clip))
    assert np.all(np.abs(res.command - q) <= m.action_scale * m.action_clip + 1e-12)
    assert res.state_age == pytest.approx(0.01)
    # the next observation carries the clipped action as last_action
    res2 = executor.step(1.02)
    np.testing.assert_allclose(res2.observation[m.term_slices()["last_action"]], res.action)


def test_stale_missing_and_bad_inputs_skip_and_are_counted(bundle_dir, robot):
    ex = PolicyExecutor(load_bundle(bundle_dir, robot), robot, ExecutorConfig(max_state_age=0.05,
                                                                              compute_deadline=1.0))
    assert ex.step(0.0).skipped == "no_state"
    ex.update_state(robot.ready_pose, np.zeros(7), 0.0)
    assert ex.step(0.01).skipped == "no_goal"
    ex.set_goal(GOAL)
    assert ex.step(0.04).command is not None
    res = ex.step(0.2)  # state is 200 ms old: never extrapolated
    assert res.command is None and res.skipped == "stale_state" and res.state_age == pytest.approx(0.2)
    assert not ex.update_state(np.full(7, np.nan), np.zeros(7), 0.2)
    assert ex.step(0.21).skipped == "stale_state"  # the NaN state was not taken
    with pytest.raises(ValueError, match="7 positions"):
        ex.update_state(np.zeros(6), np.zeros(6), 0.3)
    with pytest.raises(ValueError, match="goal"):
        ex.set_goal([0.1, np.inf, 0.2])
    s = ex.stats()
    assert (s["cycles"], s["commands"], s["skipped_no_state"], s["skipped_no_goal"], s["skipped_stale_state"],
            s["rejected_states"]) == (5, 1, 1, 1, 2, 1)
    assert s["late_cycles"] == 1  # 0.04 -> 0.2 s is more than 1.5 periods


def test_missed_deadline_skips_the_cycle(bundle_dir, robot):
    ex = PolicyExecutor(load_bundle(bundle_dir, robot), robot, ExecutorConfig(compute_deadline=1e-9))
    ex.set_goal(GOAL)
    ex.update_state(robot.ready_pose, np.zeros(7), 0.0)
    res = ex.step(0.0)
    assert res.command is None and res.skipped == "deadline_missed" and res.compute_time > 1e-9
    assert ex.stats()["skipped_deadline_missed"] == 1
    np.testing.assert_array_equal(ex.step(0.0).observation[-7:], np.zeros(7))  # skipped action not fed back


def test_sustained_out_of_distribution_requests_a_revert_once(executor, robot):
    fast = np.zeros(7)
    fast[3] = 2.0  # 10 std from the training mean of joint_vel
    reverts = []
    for k in range(30):
        dq = fast if 5 <= k < 20 else np.zeros(7)
        executor.update_state(robot.ready_pose, dq, k * 0.05)
        res = executor.step(k * 0.05)
        assert res.command is not None  # the monitor reports; the shield decides
        if res.revert_reason:
            reverts.append((k, res.revert_reason))
    assert len(reverts) == 1
    k, reason = reverts[0]
    assert k == 9 and "joint_vel" in reason  # 5th excursion of the 10-cycle window
    s = executor.stats()
    assert s["ood_alarms"] == 1 and s["ood_sustained"] == 0 and s["ood_joint_vel"] < 5 and res.ood_score == s["ood_score"]


def test_ood_monitor_ignores_isolated_spikes_and_has_hysteresis():
    mon = OodMonitor({"a": slice(0, 2), "b": slice(2, 3)}, np.zeros(3), np.ones(3), threshold=3, window=4,
                     min_count=3)
    spike = np.array([0.0, 4.0, 0.0])
    calm = np.zeros(3)
    seq = [spike, calm, spike, calm, spike, calm, calm]
    assert [mon.update(x).sustained for x in seq] == [False] * 7
    reports = [mon.update(x) for x in [spike, spike, spike, calm, calm, calm]]
    assert [r.raised for r in reports] == [False, False, True, False, False, False]
    assert [r.sustained for r in reports] == [False, False, True, True, True, False]  # clears at <= 1 of 4
    assert reports[0].worst_term == "a" and reports[0].terms_over == ["a"]
    assert mon.update(np.array([np.nan, 0, 0])).excursion  # non-finite is an excursion


@pytest.mark.parametrize("action_type", ["joint_position", "joint_torque"])
def test_other_action_types_follow_the_manifest(tmp_path, robot, action_type):
    scale = 0.2 if action_type == "joint_position" else 50.0
    path = write_linear_bundle(tmp_path / "b", robot, action_type=action_type, action_scale=scale, action_clip=2.0,
                               gain=3.0)  # outputs up to 3: beyond action.clip
    ex = PolicyExecutor(load_bundle(path, robot), robot, ExecutorConfig(compute_deadline=1.0))
    ex.set_goal(GOAL)
    ex.update_state(robot.ready_pose, np.zeros(7), 0.0)
    res = ex.step(0.0)
    a = np.clip(ex.bundle.backend(ex.manifest.normalize(res.observation)), -2.0, 2.0)
    if action_type == "joint_position":
        expected = np.clip(robot.ready_pose + scale * a, robot.limits.position_min, robot.limits.position_max)
        assert res.command_type == "position"
    else:
        expected = np.clip(scale * a, -robot.limits.effort, robot.limits.effort)
        assert res.command_type == "torque"
    np.testing.assert_allclose(res.command, expected, rtol=1e-6)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_delta_command_stays_in_limits_and_within_one_step_of_the_measured_pose(robot, data):
    lim = robot.limits
    q = np.array([data.draw(st.floats(lo, hi)) for lo, hi in zip(lim.position_min, lim.position_max)])
    a = np.array(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=7, max_size=7)))
    scale = data.draw(st.floats(1e-3, 0.5))
    clip = data.draw(st.floats(0.1, 3.0))
    cmd = action_to_command(robot, "joint_position_delta", a, scale, clip, q, robot.ready_pose)
    assert np.all(cmd >= lim.position_min) and np.all(cmd <= lim.position_max)
    assert np.all(np.abs(cmd - q) <= scale * clip + 1e-12)


# ---------------------------------------------------------------------- state-triggered cycles
def _gate_run(period: float, arrivals) -> list[float]:
    from simreal_ros.policy.executor import CycleGate

    gate, ran = CycleGate(period), []
    for t in arrivals:
        if gate.due(t):
            gate.ran(t)
            ran.append(t)
    return ran


def test_gate_runs_at_the_cycle_rate_on_a_faster_input_each_cycle_on_the_first_input_after_it_is_due():
    period, dt = 0.05, 0.004  # a 20 Hz policy on 250 Hz estimates
    arrivals = 1.0 + dt * np.arange(2500)  # 10 s
    ran = np.array(_gate_run(period, arrivals))
    early = (ran[0] + period * np.arange(len(ran)) - 0.25 * period)[1:]  # an input T/4 early runs it
    assert np.all(ran[1:] >= early - 1e-9) and np.all(ran[1:] < early + dt + 1e-9)  # the first input then
    assert len(ran) == int((arrivals[-1] - arrivals[0] + 0.25 * period) / period) + 1  # none extra, none lost
    assert abs(len(ran) / (arrivals[-1] - arrivals[0]) - 20.0) < 0.15


def test_gate_loses_no_cycle_on_an_input_at_the_cycle_rate_with_jitter():
    rng = np.random.default_rng(0)
    period = 0.01
    arrivals = np.sort(period * np.arange(1000) + rng.uniform(-0.1, 0.1, 1000) * period)
    ran = _gate_run(period, arrivals)
    assert len(ran) == 1000  # every input runs its cycle (a strict gate would drop the early ones)


def test_gate_never_runs_a_short_step_after_a_late_input():
    period = 0.05
    # 250 Hz input with a 30 ms hole: the cycle after it runs late, the next one not T/10 later
    arrivals = np.array([t for t in 0.004 * np.arange(1000) if not 1.0 < t < 1.03])
    ran = np.array(_gate_run(period, arrivals))
    assert np.min(np.diff(ran)) >= 0.75 * period - 1e-9
    assert abs(len(ran) / (arrivals[-1] - arrivals[0]) - 20.0) < 0.5


def test_gate_after_a_stall_restarts_instead_of_bursting_and_the_watchdog_sees_it():
    from simreal_ros.policy.executor import CycleGate

    period = 0.05
    arrivals = np.concatenate([np.arange(0.0, 1.0, 0.004), np.arange(2.0, 3.0, 0.004)])  # 1 s without input
    ran = np.array(_gate_run(period, arrivals))
    assert np.min(np.diff(ran)) >= 0.75 * period - 1e-9  # never a burst of catch-up cycles
    assert np.sum(ran >= 2.0) in (20, 21)  # the rate resumes at once
    gate = CycleGate(period)
    gate.ran(1.0)
    assert not gate.overdue(1.0 + 1.4 * period) and gate.overdue(1.0 + 1.51 * period)


def test_gate_refuses_a_bad_period():
    from simreal_ros.policy.executor import CycleGate

    with pytest.raises(ValueError, match="period"):
        CycleGate(0.0)


def test_the_declared_action_filter_bounds_each_cycles_change_as_in_the_env(tmp_path, robot, stats):
    """``action.max_change``: the executor moves the clipped action at most that much per cycle
    from the last one (from zero after a reset), as the Reach env does in training; a bundle that
    declares none runs its raw actions. A filter wider than the action range is refused."""
    from simreal_ros.policy.manifest import BundleError

    steps = {}
    for mc in (None, 0.1):
        d = write_linear_bundle(tmp_path / str(mc), robot, mean=stats[0], std=stats[1], seed=2, gain=20.0,
                                action_max_change=mc)
        ex = PolicyExecutor(load_bundle(d, robot), robot, ExecutorConfig(compute_deadline=1.0))
        assert ex.manifest.action_max_change == mc
        ex.set_goal(GOAL)
        env = ReachEnv(control_rate=ex.manifest.control_rate_hz, action_max_change=mc)
        obs, _ = env.reset(seed=1, options={"goal": GOAL})
        last, changes = np.zeros(7), []
        for _ in range(10):
            m = env._last_meas
            ex.update_state(m.position, m.velocity, m.stamp)
            res = ex.step(env.arm.time)
            np.testing.assert_allclose(res.observation.astype(np.float32), obs, atol=1e-6)
            changes.append(np.max(np.abs(res.action - last)))
            last = res.action
            obs, _, _, _, _ = env.step(res.action)
        steps[mc] = max(changes)
        env.close()
    assert steps[0.1] <= 0.1 + 1e-12 and steps[None] > 0.5, steps
    with pytest.raises(BundleError, match=r"action\.max_change.*<= 2"):
        write_linear_bundle(tmp_path / "wide", robot, action_max_change=2.5)
        load_bundle(tmp_path / "wide", robot)
