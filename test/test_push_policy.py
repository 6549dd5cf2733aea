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
