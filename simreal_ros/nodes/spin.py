"""How a node process runs its callbacks: the settings of ``nodes.common.run_node`` and of the
composed graph (``bringup.runner.InProcessGraph``). No ROS imports (the graph definition uses them).

Measured with ``bench/bench_graph_latency.py``: rclpy's SingleThreadedExecutor rebuilds its wait
set on every callback, which costs more CPU than the nodes' own work; the EventsExecutor (C++,
``rclpy.experimental``) dispatches each event from a queue. rclpy 9.1.2's MultiThreadedExecutor
loses 91-99 % of subscription messages and is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

from simreal_ros.settings import setting, settings_of, validate_fields

EXECUTORS = ("events", "single_threaded")


@dataclass(frozen=True)
class SpinConfig:
    """Settings every node process has as parameters (read once at start)."""

    executor: str = setting("events", "callback executor: events (rclpy's EventsExecutor) or single_threaded "
                            "(rclpy's SingleThreadedExecutor)", choices=EXECUTORS, read_only=True)
    nice: int = setting(0, "scheduling niceness of the node's process, set at start (< 0 needs CAP_SYS_NICE; "
                        "refused: a warning, the process keeps its niceness). The graph gives the nodes between a "
                        "measurement and the arm's command a negative value, so a loaded machine delays them "
                        "last", low=-20, high=19, read_only=True)

    def __post_init__(self) -> None:
        validate_fields(self)


SPIN_SETTINGS = settings_of(SpinConfig)


def apply_niceness(nice: int) -> str | None:
    """Set the niceness of every thread of this process to ``nice`` (Linux: niceness is per
    thread, and the DDS threads that receive and send exist before the node reads its
    parameters; threads started later inherit it). Returns why it could not, or None."""
    import os
    from pathlib import Path

    try:
        tids = [int(p.name) for p in Path("/proc/self/task").iterdir()]
    except OSError:
        tids = [0]
    try:
        for tid in tids:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except ProcessLookupError:  # a thread that ended meanwhile
        pass
    except OSError as exc:  # PermissionError without CAP_SYS_NICE
        return f"could not set niceness {nice}: {exc.strerror or exc}"
    return None
