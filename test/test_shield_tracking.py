"""The shield keeps the simulated arm's TRUE state inside the limits, not only its commands.

Real MuJoCo arm (:class:`~simreal_ros.sim.arm.ArmSim`, impedance controller + gravity
compensation at 1 kHz, target held between control steps) driven through a real
:class:`~simreal_ros.shield.Shield` by a hostile policy: every 0.4 s each joint is sent to a
random one of its position limits (bang-bang). The arm's ground-truth joint position and
velocity are sampled at every physics step and must stay within the robot's position and
velocity limits; every sent command must pass :func:`check_limits` (its motion limits are hard).

Contacts are on: bang-bang requests drive the arm toward the table and the floor, so the
shield's Cartesian box is the scene's free space (everything above the table top, read from
the MuJoCo scene) and holds every moving link's collision geometry; no contact between the
arm and the scene may happen at any physics step. (With contacts on and no box, impacts
reached 1.28 x the velocity limit on the wrist and 7.8 mrad past a position limit; with a
flange-only box the wrist and link 7 still touched the table in 6 of 36 cases.)

The case set (profiles x control periods x seeds) was fixed before any result was seen;
cases that do not hold yet are listed in :data:`KNOWN_FAILING` (strict xfail) with the
measured excess, so the list has to shrink when the shield improves. The ``slow`` test runs
20 s cases and the held-out seeds 6-11.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig, check_limits
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import load_ranges

ROBOT = load_robot()
PROFILES = ("nominal", "default")
PERIODS = (0.01, 0.02, 0.05)
SEEDS = tuple(range(6))
DURATION = 6.0  # s of simulated time per case (15 bang-bang switches)
LONG_DURATION = 20.0  # s (the slow test: 50 switches)
HELD_OUT_SEEDS = tuple(range(6, 12))
SWITCH = 0.4  # s between new bang-bang requests
#: (profile, period, seed) -> what was measured (these cases are expected to fail).
KNOWN_FAILING: dict[tuple[str, float, int], str] = {}


def free_space(model: mujoco.MjModel) -> tuple[float, ...]:
    """The scene's free space as a shield box: above the table top (the floor is lower), as far
    sideways and up as the arm reaches."""
    g = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table")
    top = float(model.geom_pos[g][2] + model.geom_size[g][2])
    return (-1.0, -1.0, top, 1.0, 1.0, 1.5)


def arm_contacts(sim: ArmSim) -> set[str]:
    """Names of the arm's bodies touching the scene now."""
    m, d = sim.model, sim.data
    bodies = set()
    for c in d.contact[:d.ncon]:
        for g in (c.geom1, c.geom2):
            name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(m.geom_bodyid[g]))
            if name != "world":
                bodies.add(name)
    return bodies


def run_case(profile: str, period: float, seed: int, duration: float = DURATION, scene: bool = True):
    """Drive the sim (contacts on) through the shield; return (worst |dq|/v_max per joint, worst
    position excess beyond the robot's limits per joint (rad), check_limits violations of the
    sent commands, shield counters, the arm's bodies that touched the scene). ``scene=False``:
    contacts off and no box (the joint-space limits alone)."""
    sim = ArmSim(ArmSimConfig(ranges=load_ranges(profile=profile)), seed=seed)
    box = {}
    if scene:
        box = {"cartesian_box_enabled": True, "cartesian_box": free_space(sim.model)}
    else:
        sim.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    cfg = ShieldConfig(control_period=period, max_step_gap=2 * period, command_timeout=2.5 * period,
                       revert_fraction=1.0, **box)
    shield = Shield(ROBOT, cfg)
    lim = ROBOT.limits
    rng = np.random.default_rng(seed)
    worst_v = np.zeros(ROBOT.n_joints)
    worst_p = np.full(ROBOT.n_joints, -np.inf)
    times, commands = [], []
    substeps = round(period / sim.config.physics_dt)
    request = ROBOT.ready_pose.copy()
    touched: set[str] = set()
    for k in range(round(duration / period)):
        meas = sim.pop_measurements()
        if meas:
            shield.update_state(meas[-1].position, meas[-1].velocity, stamp=meas[-1].stamp, now=sim.time)
        if k % round(SWITCH / period) == 0:
            request = np.where(rng.random(ROBOT.n_joints) < 0.5, lim.position_min, lim.position_max)
        shield.propose("policy", request, kind="position", now=sim.time)
        out = shield.step(sim.time)
        if out.command is not None:
            sim.set_command(out.command)
            if not times or out.time > times[-1]:
                times.append(out.time)
                commands.append(out.command.copy())
        for _ in range(substeps):  # every physics step: the arm's ground truth
            sim.advance(sim.config.physics_dt)
            true = sim.true_state()
            worst_v = np.maximum(worst_v, np.abs(true.velocity) / lim.velocity)
            worst_p = np.maximum(worst_p, np.maximum(true.position - lim.position_max,
                                                     lim.position_min - true.position))
            if sim.data.ncon:
                touched |= arm_contacts(sim)
    viol = check_limits(ROBOT, times, commands, position_margin=cfg.position_margin,
                        max_step_gap=cfg.max_step_gap, min_step=cfg.min_step, starts_at_rest=True)
    return worst_v, worst_p, viol, shield.counts, touched


def _cases(seeds=SEEDS, known=KNOWN_FAILING):
    for profile in PROFILES:
        for period in PERIODS:
            for seed in seeds:
                why = known.get((profile, period, seed))
                marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
                yield pytest.param(profile, period, seed, id=f"{profile}-{period:g}s-seed{seed}", marks=marks)


@pytest.mark.parametrize(("profile", "period", "seed"), list(_cases()))
def test_true_arm_state_stays_within_limits(profile, period, seed):
    check_case(*run_case(profile, period, seed))


@pytest.mark.slow
@pytest.mark.parametrize(("profile", "period", "seed"), list(_cases(SEEDS + HELD_OUT_SEEDS)))
def test_true_arm_state_stays_within_limits_over_20s_and_held_out_seeds(profile, period, seed):
    check_case(*run_case(profile, period, seed, LONG_DURATION))


#: 20 s cases in joint space alone (contacts off, no box) that went past a limit before the
#: overshoot row and the coupling pass at every step (issue 9): what was measured then.
REGRESSIONS = {
    ("default", 0.01, 2): "joint 1 6.8 mrad past its position limit (a heavy joint overshot its held target)",
    ("nominal", 0.02, 8): "joint 3 at 1.002 x its velocity limit (joint 1 reversing, through the inertia)",
}


@pytest.mark.parametrize(("profile", "period", "seed"), list(REGRESSIONS), ids=lambda x: str(x))
def test_former_20s_excursions_stay_within_limits(profile, period, seed):
    check_case(*run_case(profile, period, seed, LONG_DURATION, scene=False))


def check_case(worst_v, worst_p, viol, counts, touched) -> None:
    assert not touched, f"the arm touched the scene: {sorted(touched)}"
    assert not viol, f"sent commands violate their limits: {viol[:3]}"
    assert counts["faults"] == 0, dict(counts)
    assert counts["braking"] > 0  # the scenario does reach the limits (the check has teeth)
    names = ROBOT.joint_names
    over_v = {names[i]: round(float(worst_v[i]), 3) for i in np.flatnonzero(worst_v > 1.0)}
    assert not over_v, f"true joint speed / velocity limit: {over_v}"
    over_p = {names[i]: round(float(worst_p[i]), 4) for i in np.flatnonzero(worst_p > 0.0)}
    assert not over_p, f"true joint position beyond its limit (rad): {over_p}"
