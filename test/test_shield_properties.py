"""Property-based tests of the shield core: whatever comes in, nothing sent exceeds a limit.

Hypothesis draws a limit set (the Panda's, randomly tightened), a shield configuration and
the parameters of a scenario; a seeded generator then produces the input sequence (commands
with NaN/signalling NaN/inf/huge values/wrong lengths/reordered names, joint states that
track the command or are arbitrary, missing or stale, clock steps that are normal, tiny,
zero, negative or huge, e-stops, resets, mode changes and revert requests). Every sent
command sequence is re-checked with :func:`check_limits`.

The default run is small. The million-input run::

    SIMREAL_MILLION=1 pytest -m million test/test_shield_properties.py
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig, check_limits

ROBOT = load_robot()
N = ROBOT.n_joints
SNAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]
SPECIALS = (math.nan, SNAN, math.inf, -math.inf, 1e300, -1e300, 1e18, 5e5, -5e5)
MOTION_KINDS = {"position", "velocity", "acceleration", "jerk", "invalid"}
TORQUE_KINDS = {"effort", "effort_rate"}


@st.composite
def limit_sets(draw):
    """The Panda's limits, each tightened by a random factor (config may only tighten)."""
    lim = ROBOT.limits
    over = {}
    for i, name in enumerate(ROBOT.joint_names):
        lo, hi = lim.position_min[i], lim.position_max[i]
        width = draw(st.floats(0.3, 1.0)) * (hi - lo)
        start = lo + draw(st.floats(0.0, 1.0)) * (hi - lo - width)
        f = {k: draw(st.floats(lo_f, 1.0)) for k, lo_f in (("v", 0.05), ("a", 0.02), ("j", 0.0005),
                                                            ("e", 0.1), ("r", 0.02))}
        over[name] = {
            "min_position": max(start, lo), "max_position": min(start + width, hi),
            "max_velocity": f["v"] * lim.velocity[i], "max_acceleration": f["a"] * lim.acceleration[i],
            "max_jerk": f["j"] * lim.jerk[i], "max_effort": f["e"] * lim.effort[i],
            "max_effort_rate": f["r"] * lim.effort_rate[i],
        }
    return ROBOT.with_limit_overrides(over)


@st.composite
def configs(draw, command_mode=None):
    period = draw(st.sampled_from([0.001, 0.005, 0.01, 0.02, 0.05]))
    return ShieldConfig(
        position_margin=draw(st.sampled_from([0.0, 0.01, 0.05])),
        command_timeout=draw(st.sampled_from([0.05, 0.1, 0.5])),
        state_timeout=draw(st.sampled_from([0.05, 0.1, 0.5])),
        control_period=period,
        max_step_gap=period * draw(st.sampled_from([1.0, 2.0, 5.0])),
        mode=draw(st.sampled_from(["active", "shadow", "blend", "hold"])),
        blend_ramp_rate=draw(st.sampled_from([0.5, 5.0, 1e3])),
        revert_fraction=draw(st.sampled_from([0.2, 0.9, 1.0])),
        revert_target=draw(st.sampled_from(["baseline", "hold"])),
        command_mode=command_mode or draw(st.sampled_from(["position", "position", "effort"])),
        tracking_margin=draw(st.sampled_from([0.0, 0.1, 0.3])),
    )


scenarios = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1),
    "p_special": st.sampled_from([0.0, 0.01, 0.2]),
    "p_wide": st.sampled_from([0.0, 0.1, 0.5]),
    "step_scale": st.sampled_from([1e-4, 1e-2, 0.3, 3.0]),
    "track_noise": st.sampled_from([0.0, 1e-3, 0.05, None]),  # None: arbitrary states
    "p_state_drop": st.sampled_from([0.0, 0.05, 0.5]),
    "p_clock": st.sampled_from([0.0, 0.02, 0.2]),
    "p_event": st.sampled_from([0.0, 0.01, 0.05]),
})


def _request(rng, sc, shield, prev, wide_lo, wide_hi, scale):
    u = rng.random()
    if u < sc["p_special"]:
        kind = rng.integers(4)
        if kind == 0:
            x = prev.copy()
            x[rng.integers(N)] = SPECIALS[rng.integers(len(SPECIALS))]
            return x, None
        if kind == 1:
            return np.full(rng.integers(0, 2 * N), 0.1), None
        if kind == 2:
            return prev.copy(), list(reversed(shield.names))
        return np.full(N, SPECIALS[rng.integers(len(SPECIALS))]), None
    if u < sc["p_special"] + sc["p_wide"]:
        return rng.uniform(wide_lo, wide_hi), None
    return prev + rng.normal(0.0, sc["step_scale"], N) * scale, None


def run_scenario(robot, cfg: ShieldConfig, sc: dict, n_steps: int):
    """Drive a shield with generated inputs; return (violations, outputs, shield)."""
    rng = np.random.default_rng(sc["seed"])
    shield = Shield(robot, cfg)
    lim = shield.limits
    effort = cfg.command_mode == "effort"
    wide_lo = -2 * lim.tau if effort else lim.q_lo - 1.0
    wide_hi = 2 * lim.tau if effort else lim.q_hi + 1.0
    scale = lim.tau if effort else 1.0
    now, stamp = 100.0, 0.0
    mid = (lim.q_lo + lim.q_hi) / 2
    q_true = mid + (rng.random(N) - 0.5) * (lim.q_hi - lim.q_lo) * 1.2  # may start outside the margin
    prev_req = {"policy": np.zeros(N) if effort else q_true.copy(),
                "baseline": np.zeros(N) if effort else q_true.copy()}
    times, commands, states, outputs = [], [], [], []
    for _ in range(n_steps):
        u = rng.random()
        if u < sc["p_clock"]:
            dt = float(rng.choice([0.0, -rng.uniform(0, 1.0), rng.uniform(0, cfg.min_step), rng.uniform(0.1, 2.0),
                                   1e3 * rng.random()]))
        else:
            dt = cfg.control_period * rng.uniform(0.5, 1.5)
        now += dt
        if rng.random() >= sc["p_state_drop"]:
            if sc["track_noise"] is None:
                q = rng.uniform(lim.q_lo - 0.3, lim.q_hi + 0.3)
                dq = rng.uniform(-2, 2, N) * lim.v
            else:
                last = commands[-1] if commands and not effort else q_true
                q = last + rng.normal(0, sc["track_noise"] + 1e-12, N)
                dq = rng.normal(0, 1, N) * lim.v * 0.3
            if rng.random() < sc["p_special"]:
                q[rng.integers(N)] = SPECIALS[rng.integers(len(SPECIALS))]
            stamp += abs(dt)
            shield.update_state(q, dq, stamp, now)
        for src in ("policy", "baseline"):
            if rng.random() < 0.9:
                vals, names = _request(rng, sc, shield, prev_req[src], wide_lo, wide_hi, scale)
                if shield.propose(src, vals, kind="position", names=names, now=now):
                    prev_req[src] = np.asarray(vals, dtype=float)
        if rng.random() < sc["p_event"]:
            ev = rng.integers(5)
            if ev == 0:
                shield.estop("test")
            elif ev == 1:
                shield.reset(now)
            elif ev == 2:
                shield.set_mode(["active", "shadow", "blend", "hold"][rng.integers(4)])
            elif ev == 3:
                shield.request_revert("test monitor")
            else:
                shield.reset(now)
                shield.set_mode("active")
        meas = shield.state if shield.state_fresh(now) else None
        out = shield.step(now)
        if out.command is None or (times and out.time <= times[-1]):
            continue
        times.append(out.time)
        commands.append(out.command.copy())
        states.append(None if meas is None else (meas[0].copy(), meas[1].copy()))
        outputs.append(out)
    viol = check_limits(robot, times, commands, command_mode=cfg.command_mode,
                        position_margin=cfg.position_margin, states=None if effort else states,
                        max_step_gap=cfg.max_step_gap, min_step=cfg.min_step, starts_at_rest=True)
    return viol, outputs, shield, (times, commands, states)


def torque_unavoidable(robot, slim, cfg, times, commands, states, outputs, v) -> bool:
    """Could no target within the motion limits have kept the torque (rate) limit at sample
    ``v.index``? Or was the shield braking there (a hard-safety choice)? ``slim``: the
    motion limits as the shield plans with them (velocity scaled by the tracking margin)."""
    k, i = v.index, robot.joint_names.index(v.joint)
    if outputs[k].braking or k == 0 or states[k] is None:
        return True
    lim = robot.limits
    v_max, a_max, j_max = slim.v[i], slim.a[i], slim.j[i]
    K, D = robot.gains.stiffness[i], robot.gains.damping[i]
    qm, dqm = states[k][0][i], states[k][1][i]
    dt = times[k] - times[k - 1]
    q = commands[k - 1][i]
    vel = acc = 0.0  # the sent motion's derivatives, as check_limits computes them (from rest)
    for m in range(1, k):
        h = times[m] - times[m - 1]
        if h < cfg.min_step:
            continue
        if h > cfg.max_step_gap:
            vel = acc = 0.0
        v_new = (commands[m][i] - commands[m - 1][i]) / h
        vel, acc = v_new, (v_new - vel) / h
    if dt > cfg.max_step_gap:
        vel = acc = 0.0
        dt = cfg.max_step_gap
    base = q + vel * dt
    # the next acceleration must still let the joint come back to zero acceleration (jerk
    # limited) without passing the velocity limit: v' + a'|a'| / (2 j) <= v_max
    up, dn = max(v_max - vel, 0.0), max(v_max + vel, 0.0)
    a_up = 2 * up / (dt + math.sqrt(dt * dt + 2 * up / j_max))
    a_dn = 2 * dn / (dt + math.sqrt(dt * dt + 2 * dn / j_max))
    lo = max(base + dt * dt * max(acc - j_max * dt, -a_max, -a_dn), q - dt * v_max, slim.q_lo[i])
    hi = min(base + dt * dt * min(acc + j_max * dt, a_max, a_up), q + dt * v_max, slim.q_hi[i])
    tol = 1e-7  # rad: intervals overlapping by less than this count as disjoint (the shield's are built
    # from its own running differences; a torque rate is K dq / dt, so this is ~0.01 % of a limit)
    e_lo, e_hi = qm + (-lim.effort[i] + D * dqm) / K, qm + (lim.effort[i] + D * dqm) / K
    if v.kind == "effort":
        return e_hi < lo + tol or e_lo > hi - tol
    if states[k - 1] is None:
        return True
    # the torque limit comes first, then its rate; a torque limit that cannot be met is met as
    # closely as the motion limits allow (the shield's documented priority)
    if e_hi < lo + tol:
        hi = lo
    elif e_lo > hi - tol:
        lo = hi
    else:
        lo, hi = max(lo, e_lo), min(hi, e_hi)
    tau_prev = K * (q - states[k - 1][0][i]) - D * states[k - 1][1][i]
    r = lim.effort_rate[i] * (times[k] - times[k - 1])
    r_lo, r_hi = qm + (tau_prev - r + D * dqm) / K, qm + (tau_prev + r + D * dqm) / K
    return r_hi < lo + tol or r_lo > hi - tol


def assert_no_violation(robot, cfg, sc, n_steps):
    viol, outputs, shield, (times, commands, states) = run_scenario(robot, cfg, sc, n_steps)
    hard = [v for v in viol if v.kind in MOTION_KINDS or cfg.command_mode == "effort"]
    assert not hard, f"{len(hard)} violations, first {hard[:3]}; counts {dict(shield.counts)}"
    # position mode: the impedance torque may only exceed its limits where the measured state
    # made it incompatible with the motion limits: recomputed here, independently of the
    # shield, from the sent history (the shield's own "infeasible" flag is not evidence)
    unexplained = [v for v in viol if v.kind in TORQUE_KINDS
                   and not torque_unavoidable(robot, shield.limits, cfg, times, commands, states, outputs, v)]
    assert not unexplained, f"{len(unexplained)} avoidable torque violations, first {unexplained[:3]}"
    for out in outputs:
        assert np.all(np.isfinite(out.command))
    return shield


#: default-run size; raise it for a longer local hunt (SIMREAL_SHIELD_EXAMPLES=2000)
DEFAULT = settings(max_examples=int(os.environ.get("SIMREAL_SHIELD_EXAMPLES", "60")), deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


@DEFAULT
@given(robot=limit_sets(), cfg=configs(), sc=scenarios)
def test_no_output_exceeds_any_limit(robot, cfg, sc):
    assert_no_violation(robot, cfg, sc, 300)


@DEFAULT
@given(robot=limit_sets(), cfg=configs(command_mode="position"),
       sc=scenarios.map(lambda d: {**d, "track_noise": 0.0, "p_special": 0.0, "p_clock": 0.0}))
def test_tracking_state_never_needs_torque_excess_flag_without_cause(robot, cfg, sc):
    """With the arm tracking the command, the run is checked the same way (a denser sample
    of the common case)."""
    assert_no_violation(robot, cfg, sc, 300)


MILLION_STEPS = 500
MILLION_EXAMPLES = 2000  # 2000 examples x 500 commands = 1e6 generated inputs


@pytest.mark.million
@pytest.mark.skipif(not os.environ.get("SIMREAL_MILLION"), reason="set SIMREAL_MILLION=1 for the million-input run")
@settings(max_examples=MILLION_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(robot=limit_sets(), cfg=configs(), sc=scenarios)
def test_million_inputs_no_output_exceeds_any_limit(robot, cfg, sc):
    assert_no_violation(robot, cfg, sc, MILLION_STEPS)


# ---------------------------------------------------------------------- pass-through
@st.composite
def smooth_cases(draw):
    robot = draw(limit_sets())
    period = draw(st.sampled_from([0.005, 0.01, 0.02]))
    cfg = ShieldConfig(control_period=period, max_step_gap=2 * period, position_margin=0.01)
    return robot, cfg, draw(st.integers(0, 2**32 - 1))


@DEFAULT
@given(case=smooth_cases())
def test_commands_inside_every_limit_pass_unchanged(case):
    robot, cfg, seed = case
    rng = np.random.default_rng(seed)
    shield = Shield(robot, cfg)
    lim, pf = shield.limits, shield._pos_filter
    K = robot.gains.stiffness
    dt = cfg.control_period
    # q = c + amp (1 - cos wt)^2 / 4 starts at rest (value, velocity, acceleration and jerk
    # all 0); for the unit shape |f1| < 0.65, |f2| <= 1, |f3| < 2, so with these amplitudes
    # the derivatives and the torques at perfect tracking stay below 30 % of every limit,
    # away from the braking zone. The coupling pass runs at every step (coupling_min_step 0):
    # these torque steps are small enough that it never scales them (its screen passes).
    assert cfg.coupling_min_step == 0.0
    w = rng.uniform(0.5, 3.0, N)
    room = (lim.q_hi - lim.q_lo) / 2 - pf.screen
    amp = np.minimum.reduce([2 * room, 0.3 * lim.v / w, 0.3 * lim.a / w**2, 0.15 * lim.j / w**3,
                             0.3 * lim.tau / (K * w * dt + 1e-12), 0.3 * lim.dtau / (K * w**2 * dt + 1e-12),
                             np.sqrt(0.6 * lim.v * lim.j) / w**2])
    amp = np.maximum(amp, 0.0) * rng.uniform(0.1, 1.0, N)
    c = (lim.q_lo + lim.q_hi) / 2 - amp / 2
    now = 0.0
    shield.update_state(c, np.zeros(N), now, now)
    assert np.array_equal(shield.step(now).command, c)  # starts at the measured position
    prev = c
    for _ in range(300):
        now += dt
        target = c + amp * (1 - np.cos(w * now)) ** 2 / 4
        shield.update_state(prev, np.zeros(N), now, now)
        shield.propose("policy", target, kind="position", now=now)
        out = shield.step(now)
        assert out.interventions == [], out.interventions
        assert np.array_equal(out.command, target)
        prev = out.command
