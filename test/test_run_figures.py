"""simreal sim's run figures (bringup.coordinator.RunFigures): the counters count from start-up.

The reports are the policy's /diagnostics of an idle `simreal sim` run (its bag): the graph was
up while the policy's last report was still from before its first state."""

from __future__ import annotations

from simreal_ros.bringup.coordinator import RunFigures


def _policy(cycles: int, commands: int, no_state: int, stale: int = 0) -> dict[str, str]:
    return {"cycles": str(cycles), "commands": str(commands), "skipped": str(no_state + stale),
            "skipped_no_state": str(no_state), "skipped_stale_state": str(stale), "state_age_p99_ms": "8.4"}


def test_skipped_cycles_count_from_the_first_report_of_a_proposing_policy():
    fig = RunFigures()
    fig.observe("safety_shield", {"command_timeouts": "0"})
    fig.observe("policy_executor", _policy(30, 0, 30))  # no state yet: every watchdog cycle skipped
    fig.mark_started()  # the session saw the first proposal; the policy has not reported since
    fig.observe("policy_executor", _policy(48, 15, 33))  # 3 more no_state cycles before the first state
    fig.observe("safety_shield", {"command_timeouts": "0"})
    fig.observe("policy_executor", _policy(128, 95, 33, stale=1))
    t = fig.timing()
    assert (t["policy_cycles"], t["policy_skipped_cycles"]) == (80, 1)  # the start-up's no_state cycles are not the run's
    assert t["policy_skipped_by_reason"] == {"stale_state": 1}
    assert t["shield_command_timeouts"] == 0 and t["policy_state_age_p99_ms"] == 8.4


def test_the_baseline_is_the_latest_report_when_the_policy_already_proposes():
    fig = RunFigures()
    fig.observe("policy_executor", _policy(40, 20, 20))
    fig.mark_started()
    fig.observe("policy_executor", _policy(60, 40, 20))
    assert (fig.timing()["policy_cycles"], fig.timing()["policy_skipped_cycles"]) == (20, 0)
