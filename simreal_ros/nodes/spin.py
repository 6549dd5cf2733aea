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

    def __post_init__(self) -> None:
        validate_fields(self)


SPIN_SETTINGS = settings_of(SpinConfig)
