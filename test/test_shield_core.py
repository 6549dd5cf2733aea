"""Behaviour of the shield core a user relies on: rejected inputs, watchdogs, e-stop, modes,
revert, clock trouble, the Cartesian box and effort mode (no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig, check_limits

ROBOT = load_robot()
N = ROBOT.n_joints
READY = ROBOT.ready_pose.copy()
DT = 0.01
SNAN = np.frombuffer(np.array([0x7FF0000000000001], dtype=np.uint64).tobytes(), dtype=np.float64)[0]


class Loop:
    """A shield driven at DT with an arm that tracks the sent command perfectly."""

    def __init__(self, **cfg) -> None:
        cfg.setdefault("revert_fraction", 1.0)  # no automatic revert unless a test asks for it
        self.cfg = ShieldConfig(**cfg)
        self.shield = Shield(ROBOT, self.cfg)
        self.now = 0.0
        self.q = READY.copy()
        self.times, self.sent, self.outs = [], [], []
        self.shield.update_state(self.q, np.zeros(N), self.now, self.now)
        self._record(self.shield.step(self.now))

    def _record(self, out):
        self.outs.append(out)
        if out.command is not None and (not self.times or out.time > self.times[-1]):
            self.times.append(out.time)
            self.sent.append(out.command.copy())

    def cycle(self, policy=None, baseline=None, state=True, n=1):
        for _ in range(n):
            self.now += DT
            if state:
                self.shield.update_state(self.q, np.zeros(N), self.now, self.now)
            if policy is not None:
                self.shield.propose("policy", policy, kind="position", now=self.now)
            if baseline is not None:
                self.shield.propose("baseline", baseline, kind="position", now=self.now)
            out = self.shield.step(self.now)
            self._record(out)
            if out.command is not None:
                self.q = out.command.copy()
        return out

    def violations(self):
        return check_limits(ROBOT, self.times, self.sent, position_margin=self.cfg.position_margin,
                            max_step_gap=self.cfg.max_step_gap, min_step=self.cfg.min_step,
                            starts_at_rest=True)


def far_target():
    t = READY.copy()
    t[0] += 1.0
    t[3] += 0.5
    return t


# ---------------------------------------------------------------------- inputs
@pytest.mark.parametrize("bad", [
    [math.nan] + [0.0] * (N - 1),
    [0.0] * (N - 1) + [SNAN],
    [math.inf] * N,
    [-math.inf] + [0.0] * (N - 1),
    [0.0] * (N - 1),
    [0.0] * (N + 1),
    [1e9] * N,
])
def test_invalid_commands_are_rejected_counted_and_never_forwarded(bad):
    loop = Loop()
    loop.cycle(policy=READY, n=5)
    held = loop.q.copy()
    assert loop.shield.propose("policy", bad, kind="position", now=loop.now + DT) is False
    out = loop.shield.step(loop.now + DT)
    assert loop.shield.counts["rejected_policy"] == 1
    assert np.all(np.isfinite(out.command)) and np.array_equal(out.command, held)
    assert "no fresh policy" in out.reason


@pytest.mark.parametrize("names", [list(reversed(ROBOT.joint_names)), [f"j{i}" for i in range(N)],
                                   list(ROBOT.joint_names[:-1])])
def test_wrong_or_reordered_joint_names_are_rejected(names):
    loop = Loop()
    assert loop.shield.propose("policy", READY, kind="position", names=names, now=0.005) is False
    assert loop.shield.counts["rejected_policy"] == 1
    assert loop.shield.propose("policy", READY, kind="position", names=list(ROBOT.joint_names), now=0.006) is True


def test_reordered_state_is_dropped_and_a_restarted_clock_needs_a_reset():
    shield = Shield(ROBOT)
    assert shield.update_state(READY, np.zeros(N), 100.0, 0.0)
    assert not shield.update_state(READY + 0.1, np.zeros(N), 99.99, 0.001)  # arrived out of order
    assert not shield.update_state(READY + 0.2, np.zeros(N), 0.5, 0.002)  # the driver's clock restarted
    assert np.allclose(shield.state[0], READY)
    ok, _ = shield.reset(0.003)  # the operator's reset accepts the restarted clock
    assert ok and shield.update_state(READY + 0.2, np.zeros(N), 0.5, 0.004)
    assert np.allclose(shield.state[0], READY + 0.2)
    # a driver that restarted long ago: every state refused, the state went stale, the first
    # reset is refused but lets the next state in, and the second one succeeds
    assert not shield.update_state(READY, np.zeros(N), 0.1, 5.0)
    ok, why = shield.reset(5.0)
    assert not ok and "reset again" in why
    assert shield.update_state(READY, np.zeros(N), 0.1, 5.001)
    assert shield.reset(5.002)[0]


def test_a_frozen_driver_resending_its_last_sample_goes_stale_and_stops_the_policy():
    """Issue 9, defect 2: the same stamp (or an older one) re-sent for 2 s was accepted every
    time and kept the policy driving while the arm moved 0.745 rad."""
    loop = Loop(state_timeout=0.05)
    loop.cycle(policy=READY, n=5)
    stamp = loop.now
    target = READY + 0.5
    outs = []
    for k in range(200):  # 2 s of the same sample, with its stamp or an older one
        loop.now += DT
        loop.shield.update_state(READY, np.zeros(N), stamp - (0.3 if k % 2 else 0.0), loop.now)
        loop.shield.propose("policy", target, kind="position", now=loop.now)
        outs.append(loop.shield.step(loop.now))
        loop._record(outs[-1])
    assert loop.shield.counts["repeated_state"] + loop.shield.counts["reordered_state"] == 200
    assert outs[-1].fault and "stale" in outs[-1].fault
    moved = np.abs(np.array(loop.sent) - READY).max()
    assert moved < 0.1, f"the policy kept driving the arm on a frozen state ({moved:.3f} rad)"
    assert loop.violations() == []


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, 1e308, "1.0", True, 1j])
def test_absurd_times_are_refused_and_change_nothing(bad):
    """Defect 2: inf/1e308 kept state and commands fresh forever; one step(now=1e308) froze
    the shield so that a later e-stop never appeared in its output."""
    loop = Loop()
    loop.cycle(policy=READY + 0.01, n=3)
    for call in (lambda: loop.shield.step(bad), lambda: loop.shield.update_state(READY, np.zeros(N), bad, 1.0),
                 lambda: loop.shield.update_state(READY, np.zeros(N), 1.0, bad),
                 lambda: loop.shield.propose("policy", READY, kind="position", now=bad)):
        with pytest.raises(ValueError, match="finite time"):
            call()
    loop.shield.estop("test")
    out = loop.cycle(policy=READY + 0.01, n=2)
    assert out.estop and out.reason.startswith("e-stop")
    assert out.time == pytest.approx(loop.now)


def test_a_clock_going_back_repeats_the_command_but_shows_a_later_estop():
    loop = Loop()
    loop.cycle(policy=READY + 0.01, n=3)
    out = loop.shield.step(loop.now - 1.0)
    assert not out.estop
    loop.shield.estop("pressed")
    out = loop.shield.step(loop.now - 1.0)
    assert out.estop and loop.shield.counts["clock_backwards"] == 2


def test_a_command_of_the_wrong_kind_is_refused():
    """Defect 6: a joint_torque bundle's N m outputs were accepted as radian targets."""
    loop = Loop()
    torques = np.array([10.0, -5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    assert not loop.shield.propose("policy", torques, kind="effort", now=loop.now + 0.001)
    assert loop.shield.counts["rejected_policy_kind"] == 1
    out = loop.cycle()
    assert out.source == "hold" and out.reason.startswith("no fresh policy")
    effort = Shield(ROBOT, ShieldConfig(command_mode="effort"))
    assert not effort.propose("policy", READY, kind="position", now=0.0)
    assert effort.propose("policy", torques, kind="effort", now=0.0)


@pytest.mark.parametrize("bad", [
    ["0.1"] * N, [True] * N, [1j] * N, np.array([1 + 1j] * N), np.array([object()] * N, dtype=object),
    [[x] for x in READY], np.array(READY).reshape(N, 1), "1234567", {"a": 1}])
def test_loose_input_types_are_refused(bad):
    """Defect 11: numeric strings, bools, complex numbers (imaginary part dropped), object
    arrays and 7x1 nested lists were accepted."""
    shield = Shield(ROBOT)
    assert not shield.update_state(bad, np.zeros(N), 0.0, 0.0)
    assert not shield.update_state(READY, bad, 0.0, 0.0)
    assert not shield.propose("policy", bad, kind="position", now=0.0)
    assert shield.state is None


@pytest.mark.parametrize("q_off,dq", [(1e5, 0.0), (0.0, 1e6), (0.5, 0.0), (0.0, 2.5 * 2.61)])
def test_an_implausible_state_is_a_latched_fault(q_off, dq):
    """Defect 11: states of 1e5 rad or 1e6 rad/s were accepted."""
    loop = Loop()
    loop.cycle(policy=READY, n=2)
    q = READY.copy()
    q[0] = ROBOT.limits.position_max[0] + q_off if q_off else q[0]
    v = np.zeros(N)
    v[6] = dq
    assert not loop.shield.update_state(q, v, loop.now + 0.001, loop.now + 0.001)
    out = loop.cycle(policy=READY)
    assert out.fault and "implausible joint state: panda_joint" in out.fault
    assert out.source == "hold"


def test_restart_mid_motion_continues_the_sent_motion():
    """Defect 12: restart() mid-motion made the sent stream jump to the measured position at
    rest: 12x the velocity limit and 86x the acceleration limit."""
    loop = Loop()
    goal = READY.copy()
    goal[0] += 1.0
    loop.cycle(policy=goal, n=30)
    loop.q = loop.sent[-1] - 0.05  # the arm lags its target, as it does while moving
    loop.shield.restart()
    loop.cycle(policy=goal, n=80)
    assert loop.violations() == []
    # after a pause longer than max_step_gap it starts again from the measured arm, at rest
    loop.now += 1.0
    loop.q = READY.copy()
    loop.shield.restart()
    out = loop.cycle(policy=goal)
    assert np.allclose(out.command, READY)


def test_invalid_state_is_rejected():
    shield = Shield(ROBOT)
    assert not shield.update_state([math.nan] * N, np.zeros(N), 0.0, 0.0)
    assert not shield.update_state(READY[:3], np.zeros(3), 0.0, 0.0)
    assert shield.counts["rejected_state"] == 2
    assert shield.step(0.0).command is None  # nothing to send before a valid state


# ---------------------------------------------------------------------- watchdogs
def test_command_timeout_stops_within_limits_then_holds_and_resumes():
    loop = Loop(command_timeout=0.1)
    target = far_target()
    loop.cycle(policy=target, n=30)  # moving fast toward the target
    moving = loop.sent[-1] - loop.sent[-2]
    assert np.abs(moving).max() > 0.005
    t_last_cmd = loop.now
    outs = [loop.cycle() for _ in range(120)]  # the policy went silent
    first_hold = next(o for o in outs if o.reason.startswith("no fresh policy"))
    assert first_hold.time <= t_last_cmd + 0.1 + DT + 1e-9
    assert np.array_equal(loop.sent[-1], loop.sent[-2])  # stopped and holding
    assert loop.violations() == []
    assert loop.shield.counts["command_timeouts"] == 1
    out = loop.cycle(policy=target)  # not latched: a fresh command resumes
    assert out.reason == "" and out.source == "policy"


def test_stale_state_at_start_up_holds_without_latching():
    loop = Loop(state_timeout=0.05)
    out = loop.cycle(state=False, n=20)  # nothing forwarded yet: the state stream is still coming up
    assert out.fault is None and out.reason.startswith("waiting for fresh joint state")
    assert loop.cycle(policy=far_target()).source == "policy"


def test_stale_state_latches_a_fault_until_reset():
    loop = Loop(state_timeout=0.05)
    loop.cycle(policy=far_target(), n=20)
    outs = [loop.cycle(policy=far_target(), state=False) for _ in range(60)]
    assert outs[-1].fault is not None and "stale" in outs[-1].fault
    assert np.array_equal(loop.sent[-1], loop.sent[-2])
    out = loop.cycle(policy=far_target(), n=5)  # fresh state again: still latched
    assert out.fault is not None and out.source == "hold"
    ok, _ = loop.shield.reset(loop.now)
    assert ok
    assert loop.cycle(policy=far_target()).source == "policy"
    assert loop.violations() == []


# ---------------------------------------------------------------------- e-stop
def test_estop_brakes_then_holds_and_needs_reset_with_fresh_state():
    loop = Loop()
    loop.cycle(policy=far_target(), n=30)
    loop.shield.estop("operator")
    outs = [loop.cycle(policy=far_target()) for _ in range(100)]
    assert all(o.estop and o.source == "hold" for o in outs)
    speeds = [np.abs(b - a).max() for a, b in zip(loop.sent[-101:-1], loop.sent[-100:])]
    assert speeds[-1] == 0.0 and all(b <= a + 1e-12 for a, b in zip(speeds, speeds[1:]))
    assert loop.violations() == []
    loop.now += 1.0  # state goes stale: reset refused
    assert loop.shield.reset(loop.now)[0] is False
    loop.cycle(policy=far_target())
    assert loop.shield.reset(loop.now)[0] is True
    assert loop.cycle(policy=far_target()).estop is False


# ---------------------------------------------------------------------- modes
def test_shadow_mode_never_forwards_the_policy():
    loop = Loop(mode="shadow")
    policy, baseline = far_target(), READY.copy()
    clipped = []
    for _ in range(100):
        out = loop.cycle(policy=policy, baseline=baseline)
        assert out.source == "baseline"
        assert out.shadow_command is not None
        clipped.append(bool(out.shadow_interventions))
    assert np.allclose(loop.sent[-1], baseline)
    assert any(clipped)  # what the far policy target would have needed
    assert not np.allclose(out.shadow_command, loop.sent[-1])


def test_shadow_would_be_commands_are_judged_against_the_policys_own_trajectory():
    """A policy holding one reachable target while the baseline holds the arm elsewhere: the
    would-be command is clipped while its own trajectory gets there, then never again. Judged
    against the baseline's held command and the arm it holds (before), every cycle was a
    would-be intervention for as long as the two disagreed."""
    loop = Loop(mode="shadow")
    target = READY.copy()
    target[0] += 0.3
    target[3] += 0.2
    clipped = []
    for _ in range(300):
        out = loop.cycle(policy=target, baseline=READY)
        clipped.append(bool(out.shadow_interventions))
    assert any(clipped[:20])  # the approach from the sent command
    assert not any(clipped[-150:]), np.flatnonzero(clipped)
    np.testing.assert_allclose(out.shadow_command, target, atol=1e-9)
    assert np.allclose(loop.sent[-1], READY)  # the baseline still drives
    # the would-be trajectory restarts from the sent one when the policy's commands stop and resume
    loop.cycle(baseline=READY, n=int(0.5 / DT))
    out = loop.cycle(policy=target, baseline=READY)
    assert out.shadow_interventions


def test_blend_mode_and_bumpless_switches():
    loop = Loop(mode="shadow", blend_ramp_rate=2.0, blend_alpha=0.5)
    policy, baseline = far_target(), READY.copy()
    loop.cycle(policy=policy, baseline=baseline, n=20)
    assert loop.shield.set_mode("blend")[0]
    alphas = [loop.cycle(policy=policy, baseline=baseline).alpha for _ in range(300)]
    assert alphas[0] == pytest.approx(2.0 * DT) and alphas[-1] == 0.5
    assert np.all(np.diff(alphas) >= 0)
    assert np.allclose(loop.sent[-1], baseline + 0.5 * (policy - baseline))
    assert loop.shield.set_mode("active")[0]
    loop.cycle(policy=policy, baseline=baseline, n=300)
    assert np.allclose(loop.sent[-1], policy)
    assert loop.shield.set_mode("hold")[0]
    loop.cycle(policy=policy, baseline=baseline, n=50)
    assert np.array_equal(loop.sent[-1], loop.sent[-2])
    assert loop.violations() == []  # no step anywhere: every switch stayed within limits
    assert loop.shield.set_mode("dance")[0] is False


def test_revert_on_intervention_rate_latches_until_reset():
    loop = Loop(mode="active", revert_window=0.5, revert_fraction=0.5, revert_min_steps=10)
    wild = READY.copy()
    for k in range(60):  # a policy that jumps far every cycle keeps the shield busy
        wild = READY + (0.8 if k % 2 else -0.8)
        out = loop.cycle(policy=wild, baseline=READY)
        if out.reverted:
            break
    assert out.reverted and "interventions" in out.reverted and out.mode == "shadow"
    assert loop.shield.counts["reverts"] == 1
    ok, why = loop.shield.set_mode("active")
    assert not ok and "reset" in why
    assert loop.shield.reset(loop.now)[0] and loop.shield.set_mode("active")[0]


def test_external_revert_request_to_hold():
    loop = Loop(mode="active", revert_target="hold")
    loop.cycle(policy=far_target(), n=10)
    loop.shield.request_revert("tracking error 0.3 rad")
    out = loop.cycle(policy=far_target(), n=60)
    assert out.mode == "hold" and "tracking error" in out.reverted
    assert np.array_equal(loop.sent[-1], loop.sent[-2])


# ---------------------------------------------------------------------- clock
@pytest.mark.parametrize("jump", [0.0, -5.0, 1e-9, 3.0, 1e6])
def test_clock_jumps_never_give_nan_or_a_jump(jump):
    loop = Loop(command_timeout=10.0, state_timeout=10.0)
    loop.cycle(policy=far_target(), n=30)
    before = loop.sent[-1].copy()
    loop.now += jump
    out = loop.cycle(policy=far_target())
    assert np.all(np.isfinite(out.command))
    assert np.abs(out.command - before).max() <= (ROBOT.limits.velocity * loop.cfg.max_step_gap).max()
    loop.cycle(policy=far_target(), n=20)
    assert loop.violations() == []


# ---------------------------------------------------------------------- box, effort, config
def test_cartesian_box_keeps_the_flange_inside():
    p0 = ROBOT.fk(READY)[:3, 3]
    box = (tuple(p0 - 0.05), tuple(p0 + 0.05))
    # a box around the flange alone (the links' geometry would not fit: test_shield_box covers it)
    loop = Loop(cartesian_box_enabled=True, cartesian_box=(*box[0], *box[1]), cartesian_box_links=False,
                cartesian_box_clearance=0.0)
    for _ in range(200):
        out = loop.cycle(policy=far_target())
        p = ROBOT.fk(out.command)[:3, 3]
        assert np.all(p >= np.array(box[0]) - 1e-6) and np.all(p <= np.array(box[1]) + 1e-6)
    assert any(i.kind == "cartesian" for o in loop.outs for i in o.interventions)
    assert loop.violations() == []


def test_effort_mode_clips_torque_and_rate_and_holds_with_damping():
    shield = Shield(ROBOT, ShieldConfig(command_mode="effort", revert_fraction=1.0))
    lim = ROBOT.limits
    shield.update_state(READY, np.zeros(N), 0.0, 0.0)
    assert np.array_equal(shield.step(0.0).command, np.zeros(N))
    times, sent = [0.0], [np.zeros(N)]
    for k in range(1, 100):
        t = k * DT
        shield.update_state(READY, np.zeros(N), t, t)
        shield.propose("policy", 10 * lim.effort, kind="effort", now=t)
        out = shield.step(t)
        times.append(t)
        sent.append(out.command)
    assert np.allclose(sent[-1], lim.effort)
    assert check_limits(ROBOT, times, sent, command_mode="effort") == []
    shield.estop()
    dq = np.full(N, 0.5)
    for k in range(100, 200):
        t = k * DT
        shield.update_state(READY, dq, t, t)
        out = shield.step(t)
    damping = -ROBOT.gains.damping * dq
    assert np.allclose(out.command, np.clip(damping, -lim.effort, lim.effort))


@pytest.mark.parametrize("key,value", [("position_margin", -0.1), ("command_timeout", 0.0), ("mode", "fast"),
                                       ("revert_target", "policy"), ("command_mode", "velocity"),
                                       ("blend_alpha", 1.5), ("revert_min_steps", 2.5), ("state_timeout", True),
                                       ("position_margin", "0.01"), ("cartesian_box", (1.0,) * 6)])
def test_config_errors_name_the_key_and_the_allowed_range(key, value):
    with pytest.raises(ValueError, match=f"ShieldConfig '{key}' .*allowed"):
        ShieldConfig(**{key: value})
