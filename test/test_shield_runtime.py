"""The shield's node cycle without ROS: when it steps, what it publishes, braking until still
after deactivation, status (simreal_ros.shield.runtime)."""

from __future__ import annotations

import numpy as np

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig, check_limits
from simreal_ros.shield.runtime import ERROR, OK, WARN, ShieldRuntime, StepStamps

ROBOT = load_robot()
N = ROBOT.n_joints
READY = ROBOT.ready_pose.copy()
PERIOD = 0.01


def make(**cfg):
    cfg = {"control_period": PERIOD, "max_step_gap": 2 * PERIOD, "revert_fraction": 1.0, **cfg}
    return ShieldRuntime(Shield(ROBOT, ShieldConfig(**cfg)))


def test_steps_on_the_driving_command_and_the_timer_covers_a_silent_proposer():
    run = make()
    run.activate("active")
    t, q = 0.0, READY.copy()
    assert run.on_state(q, np.zeros(N), t, t) is None
    assert run.on_timer(t).output.reason == "starting: holding"
    target = READY + 0.3
    published = []
    for k in range(1, 40):
        t = k * PERIOD
        run.on_state(q, np.zeros(N), t, t)
        ok, cycle = run.on_command("policy", target, "position", t)
        assert ok and cycle is not None and cycle.publish  # the driving source's command steps it
        assert run.on_timer(t + 0.1 * PERIOD) is None  # a step just happened: the timer waits
        q = cycle.output.command
        published.append((t, q))
    ok, cycle = run.on_command("baseline", READY, "position", t + 0.001)
    assert ok and cycle is None  # not the driving source: no step
    # the policy falls silent: the timer keeps stepping and the shield stops within the timeout
    holds = []
    for k in range(40, 80):
        t = k * PERIOD
        run.on_state(q, np.zeros(N), t, t)
        cycle = run.on_timer(t)
        if cycle is not None and cycle.publish:
            q = cycle.output.command
            published.append((t, q))
            holds.append(cycle)
    assert any(c.status_changed and any(lv == WARN and "no fresh policy" in txt for lv, txt in c.events)
               for c in holds)
    times, cmds = zip(*published)
    assert check_limits(ROBOT, times, cmds, position_margin=0.01, max_step_gap=2 * PERIOD,
                        starts_at_rest=False) == []
    level, text, values = run.status(t)
    assert level == WARN and "no fresh policy" in text and values["lifecycle"] == "active"


def test_after_deactivation_it_brakes_then_stops_publishing():
    run = make()
    run.activate("active")
    t, q = 0.0, READY.copy()
    run.on_state(q, np.zeros(N), t, t)
    run.on_timer(t)
    target = READY + 1.0
    for k in range(1, 30):
        t = k * PERIOD
        run.on_state(q, np.zeros(N), t, t)
        q = run.on_command("policy", target, "position", t)[1].output.command
    moving = q.copy()
    assert not run.deactivate()  # moving: braking is needed (the node defers its deactivation)
    assert run.running and not run.active
    events, n_pub, stopped = [], 0, 0
    for k in range(30, 200):
        t = k * PERIOD
        run.on_state(q, np.zeros(N), t, t)
        cycle = run.on_timer(t)
        if cycle is None:
            continue
        events += cycle.events
        stopped += cycle.stopped
        if cycle.publish:
            n_pub += 1
            q = cycle.output.command
    assert n_pub > 2 and not np.allclose(q, moving)  # it kept publishing while braking ...
    assert (OK, "inactive: holding") in events and not run.running  # ... then stopped
    assert run.on_timer(t + PERIOD) is None
    assert run.status(t)[2]["lifecycle"] == "inactive"
    assert stopped == 1 and run.deactivate()  # one cycle said braking ended; still: nothing left to brake


def test_deactivation_at_rest_needs_no_braking():
    run = make()
    run.activate("active")
    t = 0.0
    for k in range(5):
        t = k * PERIOD
        run.on_state(READY, np.zeros(N), t, t)
        run.on_command("policy", READY, "position", t)
    assert run.shield.at_rest and run.deactivate() and not run.running


def test_a_rejected_state_says_why_and_an_estop_is_an_error_status():
    run = make()
    run.activate("active")
    assert run.on_state(READY, None, 1.0, 1.0) is None  # no velocities: taken as 0
    assert "did not advance" in run.on_state(READY, np.zeros(N), 1.0, 1.01)
    assert "finite time" in run.on_state(READY, np.zeros(N), float("inf"), 1.02)
    run.on_timer(1.02)
    run.shield.estop("test")
    run.on_timer(1.03)
    level, text, values = run.status(1.03)
    assert level == ERROR and "e-stop" in text and values["estop"] == "true"


def test_step_stamps_keep_one_offset_and_take_over_only_a_clock_step_beyond_10_ms():
    clocks = {"step": 5_000_000_000, "ros": 1_700_000_000_000_000_000}  # the fake steady clock drifts 10 ns a read

    def step_ns():
        clocks["step"] += 10  # every reading advances the steady clock a little
        return clocks["step"]

    stamps = StepStamps(step_ns, lambda: clocks["ros"])
    first = stamps(5.0)
    offset = stamps.ros_minus_step
    assert first == 5_000_000_000 + offset
    assert stamps(5.0 + 1e-3) - first == 1_000_000  # exact step differences
    clocks["ros"] += 5_000_000  # a 5 ms system clock step, re-read after 1 s: kept
    assert stamps(6.5) == 6_500_000_000 + offset
    clocks["ros"] += 20_000_000  # 25 ms in all: taken over at the next re-read
    assert stamps(6.6) == 6_600_000_000 + offset
    assert stamps(7.6) - 7_600_000_000 != offset and abs(stamps.ros_minus_step - offset - 25_000_000) < 1_000


def test_rejection_names_a_wrong_label_or_a_bad_vector():
    run = make()
    assert run.rejection("effort", N) == "labelled 'effort', the shield takes 'position' commands"
    assert run.rejection("", N) == "labelled '(none)', the shield takes 'position' commands"
    assert run.rejection("position", 3) == f"non-finite, implausible or 3 values for {N} joints"
