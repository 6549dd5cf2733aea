"""Just-inside / just-outside tests for every limit kind (as libfranka tests its rate limiter).

For each kind a command history puts one joint right at the edge of that limit; a request
a hair inside must pass bit-for-bit unchanged, a hair outside must be cut back exactly to
the limit (and reported with that kind). The independent :func:`check_limits` agrees: it
flags the raw outside request and accepts what the shield sent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig, check_limits
from simreal_ros.shield.filter import MotionState, effort_step
from simreal_ros.shield.limits import stopping_distance

ROBOT = load_robot()
N = ROBOT.n_joints
LIM = ROBOT.limits
READY = ROBOT.ready_pose.copy()
EPS = 1e-6
J0 = 0  # the joint under test (panda_joint1)


def history_state(times, qs):
    """Backward differences of a command history, computed as check_limits does."""
    v = a = np.zeros(N)
    for k in range(1, len(times)):
        dt = times[k] - times[k - 1]
        v_new = (qs[k] - qs[k - 1]) / dt
        a = (v_new - v) / dt
        v = v_new
    return v, a


def make_case(kind: str):
    """(times, history, next time, state (q_m, dq_m) or None, edge request, outward unit)."""
    mid = (LIM.position_min + LIM.position_max) / 2
    if kind == "velocity":  # cruising at the velocity limit: continuing is the edge
        dt = 0.01
        times = [0.0, dt, 2 * dt, 3 * dt]
        qs = [mid + (k - 3) * LIM.velocity * dt for k in range(4)]
        edge = qs[-1] + LIM.velocity * dt
        return times, qs, 4 * dt, None, edge, LIM.velocity * dt
    if kind == "acceleration":  # accelerating at the limit for two steps: keep it up
        dt = 0.01
        times = [0.0, dt, 2 * dt, 3 * dt]
        a = LIM.acceleration
        qs = [mid, mid, mid + a * dt**2, mid + 3 * a * dt**2]
        edge = qs[-1] + 3 * a * dt**2
        return times, qs, 4 * dt, None, edge, a * dt**2
    if kind == "jerk":  # from rest with a short step: the jerk limit is the tightest
        dt = 0.001
        times = [0.0, dt, 2 * dt]
        qs = [mid, mid, mid]
        edge = mid + LIM.jerk * dt**3
        return times, qs, 3 * dt, None, edge, LIM.jerk * dt**3
    if kind == "position":  # at rest at the upper limit
        dt = 0.01
        hi = LIM.position_max
        times = [0.0, dt]
        qs = [hi, hi]
        return times, qs, 2 * dt, None, hi.copy(), np.maximum(np.abs(hi), 1.0)
    if kind == "effort":  # at rest; the measured arm sits so that the target's torque is at the limit
        dt = 0.01
        times = [0.0, dt]
        qs = [mid, mid]
        K = ROBOT.gains.stiffness
        qm = mid - LIM.effort / K * 0.999  # torque of staying: 0.999 * limit
        edge = qm + LIM.effort / K
        return times, qs, 2 * dt, (qm, np.zeros(N)), edge, LIM.effort / K
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["velocity", "acceleration", "jerk", "position", "effort"])
@pytest.mark.parametrize("side", ["inside", "outside"])
def test_position_mode_edges(kind, side):
    from simreal_ros.shield.filter import PositionFilter
    from simreal_ros.shield.limits import ShieldLimits

    times, qs, now, meas, edge, unit = make_case(kind)
    cfg = ShieldConfig(position_margin=0.0, max_step_gap=0.05)
    lim = ShieldLimits.from_robot(ROBOT, 0.0, cfg.max_step_gap)
    pf = PositionFilter(lim, ROBOT.gains.stiffness, ROBOT.gains.damping)
    v, a = history_state(times, qs)
    st = MotionState(times[-1], qs[-1], v, a, None)
    # the other joints ask for a little less than the edge; the joint under test goes a
    # hair in or out
    cont = qs[-1] + v * (now - times[-1])
    request = cont + (edge - cont) * (1 - 1e-3)
    sign = -1.0 if side == "inside" else 1.0
    request[J0] = edge[J0] + sign * EPS * unit[J0]
    res = pf.step(st, request, now, meas)
    hist_t, hist_q = list(times) + [now], list(qs)
    states = None if meas is None else [None] * len(times) + [meas]
    kw = dict(position_margin=0.0, states=states, rtol=1e-9)
    last = len(hist_t) - 1  # (the histories start from rest, which check_limits assumes too)
    raw = [x for x in check_limits(ROBOT, hist_t, hist_q + [request], **kw) if x.index == last]
    sent = [x for x in check_limits(ROBOT, hist_t, hist_q + [res.command], **kw) if x.index == last]
    assert sent == [], sent
    if side == "inside":
        assert np.array_equal(res.command, request), (res.command - request, res.kinds)
        assert not res.clipped.any()
        assert raw == []
    else:
        assert res.clipped[J0]
        assert res.kinds[J0] == kind, res.kinds
        assert res.command[J0] == pytest.approx(edge[J0], rel=1e-12, abs=1e-12)
        assert {v.kind for v in raw if v.joint == ROBOT.joint_names[J0]} == {kind}


@pytest.mark.parametrize("side", ["inside", "outside"])
def test_braking_distance_edge(side):
    """A joint moving toward its limit brakes exactly when its stopping distance no longer
    fits; when it must, every joint brakes (ros2_control saturation limiter behaviour)."""
    from simreal_ros.shield.filter import PositionFilter
    from simreal_ros.shield.limits import ShieldLimits

    cfg = ShieldConfig(position_margin=0.0)
    lim = ShieldLimits.from_robot(ROBOT, 0.0, cfg.max_step_gap)
    pf = PositionFilter(lim, ROBOT.gains.stiffness, ROBOT.gains.damping)
    dt = 0.01
    speed = 0.5 * LIM.velocity
    mid = (LIM.position_min + LIM.position_max) / 2
    # joint 1 cruises toward its upper limit; place it so that continuing leaves exactly
    # the stopping distance (+/- a hair); the others cruise slowly mid-range
    vel = np.full(N, 0.05)
    vel[J0] = speed[J0]
    d_stop = stopping_distance(lim, vel, np.zeros(N))
    q_next = mid.copy()
    q_next[J0] = lim.q_hi[J0] - d_stop[J0] + (1e-6 if side == "outside" else -1e-6)
    q_now = q_next - vel * dt
    st = MotionState(1.0, q_now, vel.copy(), np.zeros(N), None)
    res = pf.step(st, q_next, 1.0 + dt, None)
    if side == "inside":
        assert np.array_equal(res.command, q_next) and not res.braking
    else:
        assert res.braking
        assert np.all(res.command != q_next)  # all joints brake
        assert set(res.kinds) == {"position"}
        v_new = (res.command - q_now) / dt
        assert np.all(v_new < vel)  # slower than before
        assert np.all(v_new >= vel - LIM.acceleration * dt * (1 + 1e-9))


@pytest.mark.parametrize("kind", ["effort", "effort_rate"])
@pytest.mark.parametrize("side", ["inside", "outside"])
def test_effort_mode_edges(kind, side):
    from simreal_ros.shield.limits import ShieldLimits

    lim = ShieldLimits.from_robot(ROBOT, 0.0, 0.05)
    dt = 0.01
    if kind == "effort":
        prev = LIM.effort * 0.999
        edge = LIM.effort.copy()
        unit = LIM.effort
    else:
        prev = np.zeros(N)
        edge = LIM.effort_rate * dt
        unit = edge
    st = MotionState(0.0, prev, np.zeros(N), np.zeros(N), None)
    request = prev.copy()
    sign = -1.0 if side == "inside" else 1.0
    request[J0] = edge[J0] + sign * EPS * unit[J0]
    res = effort_step(lim, st, request, dt, None, np.zeros(N))
    raw = check_limits(ROBOT, [0.0, dt], [prev, request], command_mode="effort", rtol=1e-9)
    assert check_limits(ROBOT, [0.0, dt], [prev, res.command], command_mode="effort", rtol=1e-9) == []
    if side == "inside":
        assert np.array_equal(res.command, request) and raw == []
    else:
        assert res.kinds[J0] == kind
        assert res.command[J0] == pytest.approx(edge[J0], rel=1e-12)
        assert {v.kind for v in raw} == {kind}


@pytest.mark.parametrize("side", ["inside", "outside"])
def test_effort_rate_edge_in_position_mode(side):
    """The impedance torque's rate: the arm is pushed away from a held target by exactly
    dtau_max * dt / K in one cycle, so holding the target is the edge of the torque rate."""
    cfg = ShieldConfig(position_margin=0.0)
    shield = Shield(ROBOT, cfg)
    K = ROBOT.gains.stiffness
    mid = (LIM.position_min + LIM.position_max) / 2
    dt = 0.002  # short enough that the push stays within the tracking lead D v / K of every joint
    assert np.all(LIM.effort_rate * dt / K < shield._pos_filter.track_lead)
    shield.update_state(mid, np.zeros(N), 0.0, 0.0)
    first = shield.step(0.0).command  # holds the measured position: torque 0
    unit = LIM.effort_rate * dt / K
    pushed = mid + unit
    shield.update_state(pushed, np.zeros(N), dt, dt)
    request = first.copy()
    request[J0] += (EPS if side == "inside" else -EPS) * unit[J0]
    shield.propose("policy", request, kind="position", now=dt)
    out = shield.step(dt)
    states = [(mid, np.zeros(N)), (pushed, np.zeros(N))]
    kw = dict(position_margin=0.0, states=states, rtol=1e-9)
    joint1 = ROBOT.joint_names[J0]
    assert [x for x in check_limits(ROBOT, [0.0, dt], [first, out.command], **kw) if x.joint == joint1] == []
    if side == "inside":
        assert np.array_equal(out.command, request) and out.interventions == []
    else:
        assert [(i.joint, i.kind) for i in out.interventions] == [(joint1, "effort_rate")]
        assert out.command[J0] == pytest.approx(mid[J0], abs=1e-12)
        raw = check_limits(ROBOT, [0.0, dt], [first, request], **kw)
        assert {x.kind for x in raw if x.joint == joint1} == {"effort_rate"}


def test_check_limits_on_recordings_that_start_mid_motion_or_have_gaps():
    dt = 0.05
    v = 0.5 * LIM.velocity
    times = [k * dt for k in range(6)]
    moving = [READY + v * t for t in times]  # constant velocity, well within limits
    assert check_limits(ROBOT, times, moving) == []  # a recording may start mid-motion
    flagged = check_limits(ROBOT, times, moving, starts_at_rest=True)  # not from the shield's start
    assert {x.kind for x in flagged} >= {"acceleration"} and {x.index for x in flagged} <= {1, 2}
    jump = [q.copy() for q in moving]
    jump[4] = jump[4] + 0.2  # one target jumps
    assert {x.kind for x in check_limits(ROBOT, times, jump)} >= {"velocity", "acceleration"}
    nan = [q.copy() for q in moving]
    nan[3][2] = np.nan
    assert [x.kind for x in check_limits(ROBOT, times, nan)] == ["invalid"]
    # after a gap longer than max_step_gap the motion restarts from rest
    gap_t = times[:3] + [times[2] + 1.0 + k * dt for k in range(3)]
    held = [READY] * 3 + [READY + 1e-4 * k**3 for k in range(3)]
    assert check_limits(ROBOT, gap_t, held, starts_at_rest=True) == []


@pytest.mark.parametrize("key,value", [("position_margin", math.nan), ("position_margin", -1.0),
                                       ("max_step_gap", math.inf), ("min_step", math.nan), ("rtol", -1e-6)])
def test_check_limits_refuses_settings_that_would_weaken_it(key, value):
    """A library caller passing a NaN margin silently turned the position check off."""
    with pytest.raises(ValueError, match=key):
        check_limits(ROBOT, [0.0, 0.01], [LIM.position_max + 0.3] * 2, **{key: value})


def test_ros_stamp_rounding_at_sub_millisecond_steps_is_not_a_violation_but_a_real_excess_is():
    """The shield's sent commands carry integer-ns ROS stamps. A command arriving 0.6 ms after the
    timer's step, at a saturated acceleration/jerk, read 10000.0000x rad/s^3 against 10000 from the
    rounded stamps (seen in a calibrate recording); the stamps' resolution is allowed as rounding,
    a 1 % excess is still found."""
    shield = Shield(ROBOT, ShieldConfig(control_period=0.02, max_step_gap=0.1, min_step=1e-4,
                                        revert_fraction=1.0, command_timeout=1.0))
    t, times, sent = 5000.0, [], []
    shield.update_state(READY, np.zeros(N), t, t)
    target = READY + np.where(np.arange(N) % 2 == 0, 0.8, -0.8)
    rng = np.random.default_rng(0)
    for k in range(200):
        t += 0.02 if k % 3 else 0.0006 + 1e-4 * rng.random()  # timer step, then a command just after it
        shield.update_state(shield.last_output.command if shield.last_output is not None
                            and shield.last_output.command is not None else READY, np.zeros(N), t, t)
        shield.propose("policy", target, kind="position", now=t)
        out = shield.step(t)
        times.append(t)
        sent.append(out.command)
    stamps = np.round(np.array(times) * 1e9).astype(np.int64)  # as the node stamps them
    t_ns = stamps.astype(np.longdouble) / np.longdouble(1e9)
    exact = check_limits(ROBOT, np.array(times), sent, min_step=1e-4)
    assert exact == []
    rounded = check_limits(ROBOT, t_ns, sent, min_step=1e-4)
    allowed = check_limits(ROBOT, t_ns, sent, min_step=1e-4, time_resolution=1e-9)
    assert allowed == [], allowed[:3]
    q, tt = np.array(sent), np.array(times)
    v = np.diff(q, axis=0) / np.diff(tt)[:, None]
    a = np.diff(v, axis=0) / np.diff(tt)[1:, None]
    k = int(np.argmax(np.max(np.abs(a) / LIM.acceleration, axis=1))) + 2  # the most saturated step
    assert np.max(np.abs(a[k - 2]) / LIM.acceleration) > 0.999
    worse = [np.asarray(c) for c in sent]
    worse[k] = worse[k - 1] + 1.01 * (worse[k] - worse[k - 1])  # 1 % further at that step
    assert check_limits(ROBOT, t_ns, worse, min_step=1e-4, time_resolution=1e-9)
    print(f"rounding alone flagged {len(rounded)} sample(s)")
