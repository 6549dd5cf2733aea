"""The sim bridge's ROS-free core: commands, timing, goals, randomization knobs."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.sim.driver import KNOBS, UNSET_KNOB, DriverConfig, SimDriver, knob_error, ranges_with_overrides


def run(driver: SimDriver, seconds: float) -> list:
    return [driver.step() for _ in range(int(round(seconds / driver.period)))]


def test_tracks_commanded_target_and_publishes_every_period():
    drv = SimDriver(DriverConfig(publish_rate_hz=500.0, timing="unpaced"))
    target = drv.robot.ready_pose + np.array([0.2, -0.1, 0.1, 0.15, 0.0, 0.1, 0.0])
    assert drv.command(target, "position")
    ticks = run(drv, 2.0)
    assert all(t.measurement is not None for t in ticks)  # nominal profile: nothing dropped
    assert drv.counters["published"] == 1000
    assert np.allclose(ticks[-1].measurement.position, target, atol=0.02)
    stamps = [t.measurement.stamp for t in ticks]
    assert np.allclose(np.diff(stamps), drv.period)


@pytest.mark.parametrize("bad", [[np.nan] * 7, [0.0] * 6, [0.0, np.inf, 0, 0, 0, 0, 0]])
def test_rejects_bad_commands_and_keeps_last_target(bad):
    drv = SimDriver(DriverConfig(timing="unpaced"))
    good = drv.robot.ready_pose + 0.1
    assert drv.command(good, "position")
    assert not drv.command(bad, "position")
    assert drv.counters["rejected_commands"] == 1 and drv.last_rejection
    assert np.array_equal(drv.target, good)
    run(drv, 1.0)
    assert np.allclose(drv.arm.true_state().position, good, atol=0.02)


def test_command_for_inactive_controller_is_rejected():
    drv = SimDriver(DriverConfig(command_mode="position", timing="unpaced"))
    assert not drv.command(np.zeros(7), "effort")
    assert "active controller" in drv.last_rejection


def test_effort_mode_holds_under_gravity_compensation():
    drv = SimDriver(DriverConfig(command_mode="effort", timing="unpaced"))
    q0 = drv.arm.true_state().position
    assert drv.command(np.zeros(7), "effort")
    run(drv, 0.2)
    assert np.allclose(drv.arm.true_state().position, q0, atol=0.05)


def _lockstep_sequence(seed: int, ranges, n: int = 30):
    drv = SimDriver(DriverConfig(publish_rate_hz=500.0, timing="unpaced", sync_period=0.01, seed=seed,
                                 ranges=ranges))
    cmds = [drv.robot.ready_pose + 0.02 * k for k in range(5)]
    for c in cmds:  # all commands queued up front: the lockstep consumes one per sync period
        drv.command(c, "position")
    out, wall = [], 0.0
    while len(out) < n:
        wall += 0.001
        for _ in range(drv.due_steps(wall)):
            tick = drv.step()
            out.append(None if tick.measurement is None else tick.measurement.position)
    return out, drv


def test_same_seed_same_sequence_and_lockstep_applies_one_command_per_sync_period():
    ranges = ranges_with_overrides("default", {"noise.position_std": 0.001})  # drops, latency, dynamics too
    a, drv = _lockstep_sequence(3, ranges)
    b, _ = _lockstep_sequence(3, ranges)
    assert sum(x is not None for x in a) >= 10
    assert all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
               for x, y in zip(a, b))
    # 30 periods of 2 ms = 6 sync periods: 5 commands consumed, then it waits (or times out)
    assert drv.counters["accepted_commands"] == 5 and not drv._fifo


def test_different_seed_gives_different_noise():
    """Only sensor noise is random here (no drops, no latency, nominal dynamics): every sample is
    published for both seeds, and the two sequences differ in value by the noise's size."""
    ranges = ranges_with_overrides("nominal", {"noise.position_std": 0.001})
    a, _ = _lockstep_sequence(3, ranges)
    c, _ = _lockstep_sequence(4, ranges)
    assert all(x is not None for x in a + c)
    diff = np.array(a) - np.array(c)
    assert np.all(np.any(diff != 0, axis=1))  # every sample differs
    # the difference of two independent N(0, 1 mrad) draws has a std of sqrt(2) mrad
    assert 0.001 < diff.std() < 0.002, diff.std()
    again, _ = _lockstep_sequence(4, ranges)
    np.testing.assert_array_equal(np.array(again), np.array(c))


def test_lockstep_waits_for_a_command_then_times_out():
    drv = SimDriver(DriverConfig(publish_rate_hz=500.0, timing="unpaced", sync_period=0.002, sync_timeout=0.5))
    assert drv.due_steps(0.0) == 1  # first period runs on the initial target
    drv.step()
    assert drv.due_steps(0.1) == 0 and drv.waiting_for_command
    assert drv.due_steps(0.3) == 0
    assert drv.due_steps(0.7) == 1 and drv.counters["sync_timeouts"] == 1
    drv.step()
    drv.command(drv.robot.ready_pose, "position")
    assert drv.due_steps(0.71) == 1 and not drv.waiting_for_command


def test_paced_runs_due_periods_and_skips_a_long_stall():
    drv = SimDriver(DriverConfig(publish_rate_hz=100.0, timing="paced", max_catchup=5))
    drv.start(10.0)
    assert drv.due_steps(10.0) == 0
    assert drv.due_steps(10.031) == 3
    for _ in range(3):
        drv.step()
    assert drv.due_steps(10.035) == 0
    assert drv.due_steps(11.0) == 1  # 1 s stall: backlog skipped, counted
    drv.step()
    assert drv.counters["overruns"] > 90
    # stamps follow the schedule: the period just run ends "now", also after the skipped stall
    assert drv.wall_time_of(drv.time) == pytest.approx(11.0, abs=drv.period)
    assert drv.real_time_factor(11.0) == pytest.approx(0.04, abs=1e-6)


def test_reset_continues_time_and_samples_a_new_reachable_goal():
    drv = SimDriver(DriverConfig(timing="unpaced", goals_seed=7))
    g0 = drv.goal.copy()
    run(drv, 0.1)
    t = drv.time
    g1 = drv.reset()
    assert drv.time == pytest.approx(t) and drv.episode == 1
    assert not np.allclose(g0, g1) and g1[2] > 0.1
    tick = drv.step()
    assert tick.measurement.stamp > t
    assert np.allclose(SimDriver(DriverConfig(goals_seed=7)).goal, g0)


def test_set_goal_validates():
    drv = SimDriver()
    assert np.allclose(drv.set_goal([0.5, 0.0, 0.4]), [0.5, 0.0, 0.4])
    with pytest.raises(ValueError, match="3 finite"):
        drv.set_goal([0.5, np.nan, 0.4])
    assert np.allclose(drv.goal, [0.5, 0.0, 0.4])


def test_knob_overrides_fix_values_and_drops_are_counted():
    ranges = ranges_with_overrides("nominal", {"drop_probability": 0.5, "latency.observation_s": 0.004,
                                               "friction": None})
    assert ranges.sensor.drop_probability == (0.5, 0.5)
    assert ranges.sensor.observation_latency == (0.004, 0.004)
    drv = SimDriver(DriverConfig(timing="unpaced", ranges=ranges, seed=1))
    ticks = run(drv, 1.0)
    diag = drv.diagnostics(0.0)
    assert 400 < diag["dropped_measurements"] < 600  # 1000 measurements (1 kHz) at p=0.5
    assert diag["no_measurement"] == sum(t.measurement is None for t in ticks) > 0
    late = [t.time - t.measurement.stamp for t in ticks if t.measurement is not None]
    assert min(late) >= 0.004 - 1e-9  # stamped at acquisition: latency visible as now - stamp
    with pytest.raises(ValueError, match="unknown randomization knob"):
        ranges_with_overrides("nominal", {"nois": 1.0})
    with pytest.raises(ValueError, match="drop_probability"):
        ranges_with_overrides("nominal", {"drop_probability": 2.0})


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="timing"):
        DriverConfig(timing="fast")
    with pytest.raises(ValueError, match="sync_period"):
        DriverConfig(publish_rate_hz=500.0, sync_period=0.003)
    with pytest.raises(ValueError, match="publish period"):
        SimDriver(DriverConfig(publish_rate_hz=300.0, measurement_period=0.002))


def test_config_from_the_bridge_parameters_and_the_health_line():
    from simreal_ros.settings import settings_of
    p = {st.name: st.default for st in settings_of(DriverConfig)}
    p.update({k: UNSET_KNOB for k in KNOBS}, randomization_profile="nominal", goal=[0.0, 0.0, 0.0])
    p["friction"] = 0.2
    cfg = DriverConfig.from_parameters(p)
    assert cfg.goal is None and cfg.ranges == ranges_with_overrides("nominal", {"friction": 0.2})
    assert DriverConfig.from_parameters({**p, "goal": [0.5, 0.0, 0.4]}).goal == (0.5, 0.0, 0.4)
    with pytest.raises(ValueError, match="drop_probability"):
        DriverConfig.from_parameters({**p, "drop_probability": 2.0})
    assert knob_error(UNSET_KNOB) is None and knob_error(0.0) is None and "-1" in knob_error(-0.5)
    drv = SimDriver(DriverConfig(timing="unpaced"))
    d = {"real_time_factor": 0.5, "rejected_commands": 0, "sync_timeouts": 0}
    assert drv.health(d) == ("ok", "running")  # unpaced: no real-time target
    assert SimDriver(DriverConfig()).health(d) == ("warn", "slower than real time (RTF 0.50)")
    assert drv.health({**d, "rejected_commands": 1})[0] == "warn"
