"""Baseline reaching controller (ROS-free core): IK, limit-respecting commands, closed-loop reach."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simreal_ros.baseline import BaselineConfig, BaselineController, solve_position_ik
from simreal_ros.robot import load_robot
from simreal_ros.sim.env import ReachEnv, sample_goal

ROBOT = load_robot()
LIM = ROBOT.limits


def _goals(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [sample_goal(ROBOT, rng) for _ in range(n)]


@pytest.mark.parametrize("goal", _goals(8))
def test_ik_reaches_sampled_goals_inside_limits(goal):
    res = solve_position_ik(ROBOT, goal, ROBOT.ready_pose, max_iterations=200)
    assert res.converged, res
    assert np.linalg.norm(ROBOT.fk(res.q)[:3, 3] - goal) < 1e-4
    assert np.all(res.q >= LIM.position_min) and np.all(res.q <= LIM.position_max)


def test_ik_out_of_reach_gives_closest_configuration_within_limits():
    res = solve_position_ik(ROBOT, np.array([3.0, 0.0, 0.5]), ROBOT.ready_pose)
    assert not res.converged
    assert res.error > 1.0
    assert np.all(res.q >= LIM.position_min + 0.05 - 1e-12) and np.all(res.q <= LIM.position_max - 0.05 + 1e-12)
    # the arm stretches toward the point: closer than from the ready pose
    assert res.error < np.linalg.norm(ROBOT.fk(ROBOT.ready_pose)[:3, 3] - [3.0, 0.0, 0.5])


def test_ik_rejects_bad_target():
    with pytest.raises(ValueError, match="IK target"):
        solve_position_ik(ROBOT, np.array([np.nan, 0.0, 0.5]), ROBOT.ready_pose)


def _run_open_loop(ctl: BaselineController, goals: list[np.ndarray], switch_every: int, steps: int) -> np.ndarray:
    ctl.reset(ROBOT.ready_pose)
    cmds = [ctl.command]
    for k in range(steps):
        if k % switch_every == 0 and k // switch_every < len(goals):
            ctl.set_goal(goals[k // switch_every])
        cmds.append(ctl.step())
    return np.array(cmds)


def _assert_within_limits(cmds: np.ndarray, cfg: BaselineConfig, dt: float) -> None:
    assert np.all(cmds >= LIM.position_min) and np.all(cmds <= LIM.position_max)
    vel = np.diff(cmds, axis=0) / dt
    acc = np.diff(vel, axis=0) / dt
    assert np.all(np.abs(vel) <= LIM.velocity * cfg.velocity_scale + 1e-6), np.max(np.abs(vel) / LIM.velocity)
    assert np.all(np.abs(acc) <= LIM.acceleration * cfg.acceleration_scale + 1e-6), \
        np.max(np.abs(acc) / LIM.acceleration)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), switch_every=st.integers(1, 30))
def test_commands_respect_velocity_and_acceleration_limits_even_when_goals_jump(seed, switch_every):
    cfg = BaselineConfig()
    ctl = BaselineController(ROBOT, cfg)
    cmds = _run_open_loop(ctl, _goals(4, seed), switch_every, 80)
    _assert_within_limits(cmds, cfg, ctl.dt)


def test_open_loop_command_converges_to_goal_and_stops():
    ctl = BaselineController(ROBOT)
    goal = _goals(1, seed=3)[0]
    cmds = _run_open_loop(ctl, [goal], 1000, 100)
    assert np.linalg.norm(ROBOT.fk(cmds[-1])[:3, 3] - goal) < 1e-3
    assert np.allclose(cmds[-1], cmds[-2], atol=1e-9)  # at rest


def test_without_goal_the_arm_brakes_and_holds():
    ctl = BaselineController(ROBOT)
    cmds = _run_open_loop(ctl, [_goals(1, seed=5)[0]], 1000, 8)  # moving now
    assert np.max(np.abs(ctl.command_velocity)) > 0.05
    ctl.clear_goal()
    rest = [ctl.step() for _ in range(40)]
    assert np.allclose(rest[-1], rest[-2]) and np.max(np.abs(ctl.command_velocity)) < 1e-9
    _assert_within_limits(np.vstack([cmds, rest]), ctl.config, ctl.dt)


def test_step_before_reset_needs_a_measurement():
    ctl = BaselineController(ROBOT)
    with pytest.raises(RuntimeError, match="reset"):
        ctl.step()
    out = ctl.step(ROBOT.ready_pose)  # a measurement starts it
    assert np.allclose(out, ROBOT.ready_pose)


@pytest.mark.parametrize("key,value", [("velocity_scale", 1.5), ("rate_hz", 0.0), ("ik_damping", -1.0),
                                       ("integral_limit", float("nan"))])
def test_config_errors_name_the_key_and_range(key, value):
    with pytest.raises(ValueError, match=f"'{key}'.*allowed"):
        BaselineConfig(**{key: value})
    with pytest.raises(ValueError, match="baseline config: unknown key"):
        BaselineConfig.from_mapping({"velocity_scaling": 0.5})


def test_bad_goal_and_measurement_are_refused_and_lose_nothing():
    ctl = BaselineController(ROBOT)
    ctl.reset(ROBOT.ready_pose)
    goal = _goals(1)[0]
    ctl.set_goal(goal)
    with pytest.raises(ValueError, match="goal"):
        ctl.set_goal([0.1, 0.2])
    with pytest.raises(ValueError, match="q_measured"):
        ctl.step(np.full(7, np.inf))
    assert np.allclose(ctl.goal, goal)
    ctl.step(ROBOT.ready_pose)  # still works


@pytest.mark.parametrize("profile", ["nominal", "default"])
def test_closed_loop_reaches_goals_in_the_randomized_sim(profile):
    """Real MuJoCo arm (impedance control, noise, latency, unmodelled payload): within 2 cm, at rest."""
    env = ReachEnv(randomization=profile)
    for seed in range(4):
        _, info = env.reset(seed=seed)
        ctl = BaselineController(env.robot)
        ctl.reset(env._last_meas.position)
        ctl.set_goal(info["goal"])
        for _ in range(env.max_steps):
            env.arm.set_command(ctl.step(env._last_meas.position))
            env.arm.advance(env.control_period)
            env._measure()
        status = env._status()
        assert status["is_success"], (profile, seed, status)
        assert status["distance"] < 0.005
