"""The shipped push policy (issue 12), re-evaluated on seeds of its own through the shield core
(not numbers read from its manifest): it pushes the puck to the goal nominal and randomized,
smoothly (shield interventions per command), without a limit violation; and its manifest
records how it was made."""

from __future__ import annotations

import pytest

from simreal_ros.resources import resource
from simreal_ros.training.evaluate import aggregate, run_episodes

SHIPPED = resource("policies", "push_default")


@pytest.mark.parametrize("profile", ["nominal", "default"])
def test_shipped_push_policy_pushes_the_puck_to_the_goal_through_the_shield(profile):
    episodes = run_episodes(SHIPPED, profile, "policy", list(range(30_000, 30_008)), workers=2)
    agg = aggregate(episodes)
    assert agg["success_rate"] >= 7 / 8, [e["final_distance"] for e in episodes]
    assert agg["limit_violations"] == 0, agg["limit_violation_kinds"]
    assert agg["shield_interventions_per_100_commands"] <= 3.0, agg
    assert agg["episodes_reverted"] == 0


def test_shipped_push_policy_records_its_training_and_evaluation():
    from simreal_ros.policy.bundle import read_manifest

    m, _ = read_manifest(SHIPPED)
    prov = m.provenance
    assert prov["command"].startswith("simreal train --task push") and prov["seed"] == 0
    total_s = prov["training"]["wall_time_s"] + prov["training"]["pretraining"]["wall_time_s"]
    assert total_s <= 45 * 60  # the budget on this 2-core machine
    assert prov["training"]["library"] == "stable-baselines3" and prov["training"]["algorithm"] == "PPO"
    ev = prov["evaluation"]
    assert ev["episodes"] == 100
    assert ev["nominal"]["policy"]["success_rate"] >= 0.9 and ev["randomized"]["policy"]["success_rate"] >= 0.8
    assert ev["nominal"]["policy"]["limit_violations"] == 0 and ev["randomized"]["policy"]["limit_violations"] == 0
    assert ev["nominal"]["policy"]["shield_interventions_per_100_commands"] <= 1.0


def test_the_reality_gap_bites_on_a_laggy_tracker():
    """Direct transfer: the shipped policy, trained under the default profile (at most 30 ms of
    tracker latency), fails on a hidden table whose tracker is 150 ms late (the starting point
    for calibration and fine-tuning), where the closed-loop scripted pusher still succeeds. (On
    the slippery table, friction 0.03, the policy retrained with continued episodes gets 70 %
    against the pusher's 100 %: a gap, no longer a failure.)"""
    from pathlib import Path

    from simreal_ros.training.evaluate import REAL_PREFIX

    table = Path(__file__).parent / "data" / "hidden_table_laggy.yaml"
    seeds = list(range(31_000, 31_008))
    policy = aggregate(run_episodes(SHIPPED, f"{REAL_PREFIX}{table}", "policy", seeds, workers=2))
    pusher = aggregate(run_episodes(SHIPPED, f"{REAL_PREFIX}{table}", "baseline", seeds, workers=2))
    assert pusher["success_rate"] >= 7 / 8
    assert policy["success_rate"] <= 0.25, policy
    assert policy["limit_violations"] == 0 and pusher["limit_violations"] == 0


def _sequential_goals(controller, seed: int, goals: int) -> tuple[list[bool], list[float]]:
    """``goals`` goals in a row on one table (nominal), each sampled where the last was met, as
    ``simreal sim --task push`` sequences them: ``controller`` 'policy' (the shipped bundle through
    the executor core) or 'pusher'. Returns per goal whether it was met, and the puck's final x, y."""
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
    from simreal_ros.sim.push_env import PushEnv
    from simreal_ros.training.tasks import push_expert

    env = PushEnv(randomization="nominal")
    env.reset(seed=seed)
    ex = PolicyExecutor(load_bundle(SHIPPED, env.robot), env.robot, ExecutorConfig(compute_deadline=1e9))
    met = []
    for g in range(goals):
        if g > 0:  # as the sim bridge's next_goal: a goal sampled from the puck as it lies, nothing reset
            env.world.set_goal(env.world.sample_goal(env.np_random, env.puck_state()[0]))
        ex.set_goal(env.goal_point)
        ok = False
        for _ in range(env.max_steps):
            if controller == "policy":
                m, tr = env.measurement, env.tracked
                ex.update_state(m.position, m.velocity, m.stamp)
                ex.update_object(tr.position, tr.stamp)
                st = env.advance(ex.step(env.arm.time).command)
            else:
                st = env.step(push_expert(env, env._last_action))[4]
            if st["is_success"] or st["fell"]:
                ok = bool(st["is_success"])
                break
        met.append(ok)
    return met, [float(v) for v in env.puck_state()[0][:2]]


@pytest.mark.xfail(strict=True, reason="issue 12: the shipped push policy sometimes pushes the puck out of the "
                   "tool's workspace (here to x = 0.71 m, beyond the workspace's 0.70), where no controller can "
                   "get behind it: every later goal fails. Needs retraining (e.g. ending episodes with a penalty "
                   "when the puck leaves the pushable region)")
def test_shipped_push_policy_meets_sequential_goals_like_the_pusher():
    """The graph's sequential goals offline (no load, no DDS): in 12 sessions of 5 goals (seeds
    5000-5011) the pusher met 60/60, the policy 58/60; seed 5010 is the policy's failing one."""
    pusher, _ = _sequential_goals("pusher", 5010, 5)
    assert pusher == [True] * 5
    policy, puck = _sequential_goals("policy", 5010, 5)
    assert policy == [True] * 5, (policy, puck)
