"""One ``simreal sim`` session: start the graph, sequence goals with progress, stop, check the bag."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from simreal_ros import topics
from simreal_ros.bag.status import RECORDER_STATUS, not_received
from simreal_ros.bringup.background import BackgroundNode
from simreal_ros.bringup.graph import GraphOptions, NodeSpec, shield_config

STARTUP_TIMEOUT_S = 60.0
#: a recorded session runs this long after its last goal before the graph stops, so the bag holds
#: how the last goal ended (the dataset judges a push goal on the tracked puck's speed over +-0.1 s)
RECORD_TAIL_S = 0.5
#: what a recorded session's bag must hold from the first goal on (the dataset and the summary read
#: them), by the node that publishes each: the first goal is not requested until the recorder's own
#: counts show every one arriving. Waiting only for the recorder's subscriptions to appear in the
#: graph was not enough: a subscription can match its publisher later, and a CI bag lacked a first
#: goal met 17 us into the session, and the shield's sent commands of the first cycles.
SESSION_STREAMS = {topics.JOINT_STATES: "sim_bridge", topics.STATE_ESTIMATE: "state_estimator",
                   topics.GOAL: "sim_bridge", topics.STAMPED_SENT: "safety_shield",
                   topics.POLICY_RECORD: "policy_executor", topics.OBJECT_POSE: "sim_bridge"}


def recorded_streams(nodes: list[NodeSpec], task: str) -> list[str]:
    """The :data:`SESSION_STREAMS` this graph publishes (the puck pose only in the push task)."""
    names = {n.name for n in nodes}
    return [t for t, node in SESSION_STREAMS.items() if node in names and (t != topics.OBJECT_POSE or task == "push")]


class _Spinner(BackgroundNode):
    """The coordinator in its own context, spun in a background thread."""

    def __init__(self, task: str = "reach") -> None:
        from simreal_ros.bringup.coordinator import Coordinator

        def make(context):
            if task == "push":  # the task's own success rule (config/push_task.yaml)
                from simreal_ros.sim.push_task import load_push_task

                t = load_push_task()
                return Coordinator(t.success_radius, t.success_speed, task="push", context=context)
            return Coordinator(context=context)

        super().__init__(make)


def _wait(cond, timeout: float, alive=lambda: True) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if not alive():
            return False
        time.sleep(0.01)
    return cond()


def run_session(nodes: list[NodeSpec], opts: GraphOptions, run_dir: Path, goals: int, duration: float,
                goal_timeout: float, processes: bool, progress: bool, compose_hot_path: bool = False,
                before_goal: Callable[[int, Any], None] | None = None) -> dict[str, Any]:
    """Start the graph, sequence ``goals`` goals, stop, check the bag; the summary.

    ``before_goal(i, coordinator)`` runs before goal ``i`` is requested (goal 0: the sim bridge's
    first, once the graph is up), e.g. ``simreal explore`` publishing the episode's latent code.
    """
    from tqdm import tqdm

    from simreal_ros.bringup.coordinator import GoalResult
    from simreal_ros.bringup.report import bag_directory, scan_bag
    from simreal_ros.bringup.runner import HOT_PATH, InProcessGraph, ProcessGraph

    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "error": None}
    compose = tuple(n for n in HOT_PATH if compose_hot_path and any(s.name == n for s in nodes))
    graph = ProcessGraph(nodes, run_dir, compose) if processes else InProcessGraph(nodes, run_dir)
    graph.start()
    alive = (lambda: not graph.failed()) if processes else (lambda: True)
    spinner = _Spinner(opts.task)
    coord = spinner.node
    started = time.monotonic()
    try:
        # Up = the bridge's goal and state are here, the policy is proposing and the recorder is
        # receiving what the bag must hold (discovery between seven participants can take seconds
        # on a loaded machine; goal timing starts after it).
        streams = recorded_streams(nodes, opts.task) if opts.record else []

        def unrecorded() -> list[str]:
            return not_received(coord.figures.latest.get(RECORDER_STATUS), streams)

        def recording() -> bool:
            return not unrecorded()

        def up() -> bool:
            return (coord.goal is not None and coord.flange is not None and coord.figures.policy_commands > 0
                    and recording())

        if not _wait(up, STARTUP_TIMEOUT_S, alive):
            failed = graph.failed() if processes else {}
            missing = [what for what, ok in (("goal", coord.goal is not None), ("joint state", coord.flange is not None),
                                             ("policy commands", coord.figures.policy_commands > 0),
                                             (f"recorder counts for {', '.join(unrecorded())}", recording()))
                       if not ok]
            summary["error"] = (f"the graph did not come up within {STARTUP_TIMEOUT_S:.0f} s (no {', '.join(missing)})"
                                + (f"; exited: {failed} (see logs in {run_dir})" if failed else ""))
            return _finish(summary, coord.figures, opts, nodes)
        # start-up is over once the policy has reported while proposing (RunFigures.mark_started)
        _wait(lambda: "policy_executor" in coord.figures.latest and "safety_shield" in coord.figures.latest, 5.0, alive)
        coord.mark_started()
        bar = tqdm(total=goals, desc="goals", unit="goal", disable=not progress, dynamic_ncols=True)
        for i in range(goals):
            if duration and time.monotonic() - started > duration:
                break
            if before_goal is not None:
                before_goal(i, coord)
            if i > 0:
                previous = coord.goal_stamp
                future = coord.request_next_goal()
                if future is None or not _wait(lambda p=previous: coord.goal_stamp != p, 10.0, alive):
                    summary["error"] = "the sim bridge did not provide a new goal (service /sim_bridge/next_goal)"
                    break
            t0 = time.monotonic()
            reached = _wait(coord.reached, goal_timeout, alive)
            coord.figures.goals.append(GoalResult(coord.goal.tolist(), reached, time.monotonic() - t0,
                                                  coord.distance()))
            bar.set_postfix(dist_cm=f"{100 * coord.distance():.1f}", interventions=coord.figures.interventions)
            bar.update(1)
            if processes and graph.failed():
                summary["error"] = f"node process(es) exited: {graph.failed()} (see logs in {run_dir})"
                break
        bar.close()
        if opts.record and summary["error"] is None:
            time.sleep(RECORD_TAIL_S)
    finally:
        spinner.close()
        graph.stop()
    summary.update(_finish(summary, coord.figures, opts, nodes))
    if opts.record:
        bag = bag_directory(opts)
        summary["bag"] = str(bag) if bag else None
        if bag:
            shield = next(n for n in nodes if n.name == "safety_shield")
            scan = scan_bag(bag, shield_config(shield))  # the settings the shield ran with
            summary.update(scan)
    return summary


def _policy_hash(opts: GraphOptions) -> str:
    from simreal_ros.bringup.graph import policy_directory
    from simreal_ros.rollout.stage import policy_hash

    try:
        return policy_hash(policy_directory(opts))
    except ValueError:
        return ""


def _finish(summary: dict[str, Any], fig, opts: GraphOptions, nodes: list[NodeSpec]) -> dict[str, Any]:
    reached = [g for g in fig.goals if g.reached]
    summary.update({
        "goals_attempted": len(fig.goals),
        "goals_reached": len(reached),
        "success_rate": (len(reached) / len(fig.goals)) if fig.goals else 0.0,
        "mean_time_to_goal_s": (sum(g.seconds for g in reached) / len(reached)) if reached else float("nan"),
        "interventions": fig.interventions,
        "sent_commands": fig.sent_commands,
        "policy_commands": fig.policy_commands,
        "policy_latency_p99_ms": fig.policy_latency_p99_ms,
        **fig.timing(),
        "task": opts.task,
        "shield_mode": opts.shield_mode,
        "policy_hash": _policy_hash(opts),  # which policy ran (simreal promote checks its evidence is this one's)
        "nodes": [n.name for n in nodes],
        "goals": [g.__dict__ for g in fig.goals],
        "limit_violations": summary.get("limit_violations", 0),
        "bag": summary.get("bag"),
    })
    return summary
