"""The MuJoCo arm: built from the URDF, driven like the real arm, randomized reproducibly."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import simreal_ros.sim  # noqa: F401  (registers SimReal/Reach-v0)
from simreal_ros.robot.mujoco_model import build_model
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.env import ReachEnv
from simreal_ros.sim.randomize import RandomizationRanges, SensorRanges, load_ranges


@pytest.fixture(scope="module")
def arm():
    return ArmSim(seed=0)


def test_model_matches_robot_description(arm):
    m = arm.model
    assert (m.nq, m.nv, m.nu) == (7, 7, 7)
    assert [m.actuator(i).name for i in range(m.nu)] == list(arm.robot.joint_names)
    np.testing.assert_allclose(m.key("home").qpos, arm.robot.ready_pose)
    lim = arm.robot.limits
    np.testing.assert_allclose(m.jnt_range[:, 0], lim.position_min)
    np.testing.assert_allclose(m.jnt_range[:, 1], lim.position_max)
    np.testing.assert_allclose(m.actuator_forcerange[:, 1], lim.effort)
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(lim.position_min, lim.position_max)
        arm.data.qpos[:] = q
        mujoco.mj_kinematics(m, arm.data)
        np.testing.assert_allclose(arm.flange_position(), arm.robot.fk(q)[:3, 3], atol=1e-9)


def test_holds_ready_pose_under_gravity_within_1_mrad():
    arm = ArmSim(seed=1)
    arm.set_command(arm.robot.ready_pose)
    errs = []
    for _ in range(30):
        arm.advance(0.1)
        errs.append(np.max(np.abs(arm.true_state().position - arm.robot.ready_pose)))
    assert max(errs) < 1e-3, max(errs)


@pytest.mark.parametrize("profile", ["nominal", "wide"])
def test_random_bounded_targets_no_warnings_finite_state(profile):
    arm = ArmSim(ArmSimConfig(ranges=load_ranges(profile=profile)), seed=2)
    rng = np.random.default_rng(3)
    lim = arm.robot.limits
    for _ in range(40):  # 4 simulated seconds of random targets every 0.1 s
        arm.set_command(rng.uniform(lim.position_min, lim.position_max))
        arm.advance(0.1)
        s = arm.true_state()
        assert np.all(np.isfinite(s.position)) and np.all(np.isfinite(s.velocity))
        assert not arm.has_warnings(), [w for w in arm.data.warning if w.number]
    assert np.all(np.abs(arm.true_state().effort) <= lim.effort + 1e-9)


def test_effort_mode_applies_torque_on_top_of_gravity_compensation():
    arm = ArmSim(ArmSimConfig(command_mode="effort"), seed=0)
    arm.set_command(np.zeros(7))
    arm.advance(0.5)  # gravity-compensated: the arm barely moves with zero torque
    drift = np.max(np.abs(arm.true_state().position - arm.robot.ready_pose))
    assert drift < 0.01
    arm.set_command(np.array([0, 0, 0, 0, 0, 0, 0.05]))
    arm.advance(0.05)
    assert arm.true_state().velocity[6] > 0.2  # +torque on joint 7 accelerates it positively


def test_control_period_must_be_integer_multiple_of_physics_step():
    with pytest.raises(ValueError, match="measurement_period.*integer multiple"):
        ArmSimConfig(physics_dt=0.001, measurement_period=0.0015)
    with pytest.raises(ValueError, match="control period.*integer multiple"):
        ReachEnv(control_rate=30.0, measurement_period=0.002)
    arm = ArmSim(seed=0)
    with pytest.raises(ValueError, match="duration.*integer multiple"):
        arm.advance(0.0105)


def test_non_finite_or_wrong_length_command_is_refused(arm):
    with pytest.raises(ValueError, match="non-finite"):
        arm.set_command(np.full(7, np.nan))
    with pytest.raises(ValueError, match="7 values"):
        arm.set_command(np.zeros(6))


def test_randomization_is_reproducible_and_within_ranges():
    ranges = load_ranges(profile="default")
    a = ArmSim(ArmSimConfig(ranges=ranges), seed=42)
    b = ArmSim(ArmSimConfig(ranges=ranges), seed=42)
    assert a.draw.as_dict() == b.draw.as_dict()
    np.testing.assert_array_equal(a.model.body_mass, b.model.body_mass)
    c = ArmSim(ArmSimConfig(ranges=ranges), seed=43)
    assert a.draw.as_dict() != c.draw.as_dict()
    d = ranges.dynamics
    for _ in range(20):
        draw = a.reset()
        assert np.all((draw.joint_friction >= d.joint_friction[0]) & (draw.joint_friction <= d.joint_friction[1]))
        assert d.payload_mass[0] <= draw.payload_mass <= d.payload_mass[1]
        np.testing.assert_allclose(a.model.dof_frictionloss, draw.joint_friction)  # never compounds
        assert a.model.body_mass[a.sim.payload_body] == pytest.approx(max(draw.payload_mass, 1e-4))
    # the same sequence of episodes from the same seed
    a.reset(seed=7)
    b.reset(seed=7)
    for _ in range(3):
        assert a.reset().as_dict() == b.reset().as_dict()


def test_nominal_profile_leaves_the_model_nominal():
    arm = ArmSim(seed=0)
    nominal = build_model().model
    np.testing.assert_array_equal(arm.model.body_mass[:-1], nominal.body_mass[:-1])
    np.testing.assert_array_equal(arm.model.dof_damping, nominal.dof_damping)


def test_sensor_latency_noise_and_drops():
    ranges = RandomizationRanges(sensor=SensorRanges(observation_latency=(0.01, 0.01), drop_probability=(0.5, 0.5),
                                                     position_noise_std=(0.001, 0.001)))
    arm = ArmSim(ArmSimConfig(ranges=ranges), seed=0)
    arm.advance(0.009)
    assert arm.pop_measurements() == []  # nothing available before the latency has elapsed
    arm.advance(1.0)
    meas = arm.pop_measurements()
    assert 400 < len(meas) + 0 < 600 and arm.dropped == 1009 - len(meas) - len(arm._pending_meas)
    assert arm.time - meas[-1].stamp >= 0.01 - 1e-9  # stamps are acquisition times
    err = np.array([m.position for m in meas]) - arm.robot.ready_pose
    assert 0.0007 < err.std() < 0.0013


def test_bad_randomization_config_names_key():
    with pytest.raises(ValueError, match="dynamics: unknown key.*joint_fricton"):
        RandomizationRanges.from_dict({"dynamics": {"joint_fricton": [0, 1]}})
    with pytest.raises(ValueError, match="sensor.drop_probability: need finite 0.0 <= low <= high"):
        RandomizationRanges.from_dict({"sensor": {"drop_probability": [0.5, 0.1]}})
    with pytest.raises(ValueError, match="no randomization profile 'huge'"):
        load_ranges(profile="huge")


def test_reach_env_passes_gymnasium_checker_and_is_deterministic():
    env = gym.make("SimReal/Reach-v0", randomization="default")
    check_env(env.unwrapped, skip_render_check=True)

    def rollout(seed):
        e = gym.make("SimReal/Reach-v0", randomization="default")
        obs, info = e.reset(seed=seed)
        out = [obs]
        rng = np.random.default_rng(0)
        for _ in range(20):
            obs, reward, term, trunc, info = e.step(rng.uniform(-1, 1, 7).astype(np.float32))
            out.append(obs)
        assert set(info["reward_terms"]) >= {"distance", "success"}
        return np.array(out), info["goal"] if "goal" in info else None

    a, _ = rollout(5)
    b, _ = rollout(5)
    c, _ = rollout(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_reach_reward_penalises_what_the_filter_cuts_and_reversed_action_changes():
    """The proposal's part beyond the declared filter's step and the executed action's second
    difference both cost reward (without them PPO's policy went bang-bang and the filter made a
    triangle wave the shield clipped on acceleration); a smooth ramp within the filter costs neither."""
    from simreal_ros.sim.rewards import REACH_ACTION_ACCEL_WEIGHT, REACH_FILTER_EXCESS_WEIGHT

    env = ReachEnv()  # declared filter 0.25

    def terms(actions):
        env.reset(seed=3)
        return [env.step(np.asarray(a, dtype=np.float32))[4]["reward_terms"] for a in actions]

    step = env.action_max_change
    ramp = terms([np.full(7, step * k) for k in (1, 2, 3)])  # changes of exactly the filter's step
    assert [t["filter_excess"] for t in ramp] == [0.0, 0.0, 0.0]
    assert ramp[1]["action_accel"] == pytest.approx(0.0, abs=1e-12)
    assert ramp[2]["action_accel"] == pytest.approx(0.0, abs=1e-12)
    bang = terms([np.ones(7), -np.ones(7), np.ones(7)])  # executed: 0.25, 0, 0.25 (filtered)
    assert bang[0]["filter_excess"] == pytest.approx(-REACH_FILTER_EXCESS_WEIGHT * 7 * 0.75**2)
    assert bang[1]["filter_excess"] == pytest.approx(-REACH_FILTER_EXCESS_WEIGHT * 7 * 1.0**2)
    # second difference: 0 - 2*0.25 + 0 = -0.5, then 0.25 - 0 + 0.25 = 0.5 per joint
    assert bang[1]["action_accel"] == pytest.approx(-REACH_ACTION_ACCEL_WEIGHT * 7 * 0.5**2)
    assert bang[2]["action_accel"] == pytest.approx(-REACH_ACTION_ACCEL_WEIGHT * 7 * 0.5**2)


def test_goal_is_reachable_and_above_table():
    env = ReachEnv()
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert info["goal"][2] >= 0.2
        assert 0.3 <= np.hypot(*info["goal"][:2]) <= 0.9


def test_reach_env_public_evaluation_api_is_what_step_does():
    """measurement / advance(target) / status(): an evaluation loop that sends its own targets
    (a shield's output) sees exactly what step() would have produced for the same targets."""
    from simreal_ros.policy.action import action_to_target, limit_change

    a, b = ReachEnv(randomization="default"), ReachEnv(randomization="default")
    with pytest.raises(RuntimeError, match="before reset"):
        a.advance(np.zeros(7))
    a.reset(seed=3)
    b.reset(seed=3)
    assert a.measurement is not None and a.measurement.stamp <= a.arm.time
    rng = np.random.default_rng(0)
    last = np.zeros(7)
    for _ in range(10):
        action = rng.uniform(-1, 1, 7)
        last = limit_change(action, last, b.action_max_change)  # step() applies the declared filter
        target = action_to_target(b.robot, b.measurement.position, last, b.action_scale)
        _, _, _, _, info = a.step(action)
        np.testing.assert_array_equal(info["target"], target)
        status = b.advance(target)
        np.testing.assert_array_equal(a.measurement.position, b.measurement.position)
        assert a.measurement.stamp == b.measurement.stamp
        assert status == b.status() == {k: info[k] for k in ("distance", "speed", "is_success")}
    with pytest.raises(ValueError, match="7 values"):
        b.advance(np.zeros(6))
