"""``recorder`` node: records the configured topics to a crash-safe rosbag2 bag (MCAP storage).

Subscribes to every configured topic with ``raw=True`` (serialized CDR, never deserialized)
and hands the bytes to :class:`~simreal_ros.bag.writer.BagWriter`. Types come from the graph
(``get_topic_names_and_types``, polled every ``discovery_period_s`` until every topic is
found) or are given as ``topic:pkg/msg/Type``. The subscription copies the first
publisher's reliability and durability (so latched topics like the goal are recorded) with
a deep queue; DDS sample-lost events are counted as dropped.

SIGINT and SIGTERM close the bag cleanly (``metadata.yaml`` written). After SIGKILL the bag
holds everything up to the last flush (at most ``flush_interval_s`` lost) and
``simreal bag recover <bag>`` makes it readable again.

Bag time (the log time of each message) is the node's ROS clock at receipt: sim time under
``use_sim_time``, as ``ros2 bag record --use-sim-time`` does.

The counters written into the bag (per topic: messages received, late, dropped) are also
published on ``/diagnostics`` every ``status_interval_s`` (status ``recorder``), so whoever
runs a recording can tell when the recorder has what was sent (``simreal calibrate record``
stops the graph only then: a loaded recorder lags seconds behind the graph).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import replace
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from simreal_ros.bag.config import RecorderConfig
from simreal_ros.bag.types import UnknownTypeError, qos_profile
from simreal_ros.bag.writer import BagError, BagWriter
from simreal_ros.nodes.common import publish_status, run_node
from simreal_ros.nodes.params import ParameterError, declare_and_read
from simreal_ros.settings import from_settings, settings_of

NODE_NAME = "recorder"

#: The node's parameters: every setting of :class:`RecorderConfig` (default, bounds and description
#: declared there, defaults shown in config/recorder.yaml). All are read once at start.
SPEC = [replace(s, read_only=True) for s in settings_of(RecorderConfig)]


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise UnknownTypeError(f"cannot import the message class of {msgtype!r}: {exc}") from exc


class RecorderNode(Node):
    """Thin adapter around :class:`BagWriter`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = self.config = from_settings(RecorderConfig, declare_and_read(self, SPEC), NODE_NAME)
        name = p.bag_name or time.strftime("simreal_%Y%m%d_%H%M%S", time.gmtime())
        self.bag_path = Path(p.output_dir) / name
        try:
            self.writer = BagWriter(self.bag_path, **p.writer_options())
        except (BagError, OSError) as exc:
            raise ParameterError(f"parameter 'output_dir'/'bag_name': {exc}") from exc
        self.wanted: dict[str, str] = {}  # resolved topic -> type ('' until discovered)
        for entry in p.topics:
            topic, _, msgtype = str(entry).partition(":")
            self.wanted[self.resolve_topic_name(topic)] = msgtype
        self.subs = {}
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p.discovery_period_s, self._discover, clock=steady)
        self.create_timer(min(0.1, p.flush_interval_s / 2), self._tick, clock=steady)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if p.status_interval_s > 0:
            self.create_timer(p.status_interval_s, self._publish_status, clock=steady)
        self._discover()
        self.get_logger().info(f"recording {len(self.wanted)} topics to {self.bag_path} (mcap, flush every "
                               f"{p.flush_interval_s:g} s)")

    # ------------------------------------------------------------------ subscriptions
    def _discover(self) -> None:
        missing = [t for t in self.wanted if t not in self.subs]
        if not missing:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in missing:
            msgtype = self.wanted[topic] or (graph.get(topic) or [""])[0]
            if not msgtype or not self.count_publishers(topic):
                continue  # wait for a publisher: its QoS decides ours (latched topics need transient-local)
            try:
                self._subscribe(topic, msgtype)
            except (UnknownTypeError, BagError) as exc:
                self.get_logger().error(f"not recording {topic}: {exc}")
                self.subs[topic] = None

    def _subscribe(self, topic: str, msgtype: str) -> None:
        pubs = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
        # best effort if any publisher is (a reliable reader would not match it); transient-local only
        # if every publisher is (else it would not match a volatile one)
        reliability = ReliabilityPolicy.BEST_EFFORT if any(
            q.reliability == ReliabilityPolicy.BEST_EFFORT for q in pubs) else ReliabilityPolicy.RELIABLE
        durability = DurabilityPolicy.TRANSIENT_LOCAL if pubs and all(
            q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in pubs) else DurabilityPolicy.VOLATILE
        depth = self.config.queue_depth
        qos = QoSProfile(depth=depth, reliability=reliability, durability=durability)
        self.writer.add_topic(topic, msgtype, [qos_profile(
            "best_effort" if reliability == ReliabilityPolicy.BEST_EFFORT else "reliable",
            "transient_local" if durability == DurabilityPolicy.TRANSIENT_LOCAL else "volatile", depth=depth)])
        events = SubscriptionEventCallbacks(message_lost=lambda info, t=topic: self.writer.count_dropped(
            t, int(info.total_count_change)))
        cls = message_class(msgtype)
        try:
            sub = self.create_subscription(cls, topic, lambda data, t=topic: self._on_message(t, data), qos,
                                           raw=True, event_callbacks=events)
        except UnsupportedEventTypeError:  # the RMW cannot report lost samples
            sub = self.create_subscription(cls, topic, lambda data, t=topic: self._on_message(t, data), qos,
                                           raw=True)
        self.subs[topic] = sub
        self.get_logger().info(f"recording {topic} ({msgtype})")

    def _on_message(self, topic: str, data: bytes) -> None:
        if self.writer.closed:
            return
        self.writer.write(topic, data, self.get_clock().now().nanoseconds)

    def _tick(self) -> None:
        if not self.writer.closed:
            self.writer.tick(self.get_clock().now().nanoseconds)

    def _publish_status(self) -> None:
        if self.writer.closed:
            return
        values = self.writer.status()
        dropped = int(values.get("dropped", "0")) or int(values.get("write_errors", "0"))
        status = DiagnosticStatus(name=NODE_NAME, hardware_id=str(self.bag_path),
                                  level=DiagnosticStatus.WARN if dropped else DiagnosticStatus.OK,
                                  message="dropped messages or write errors" if dropped else "recording")
        publish_status(self, self.diag_pub, status, values)

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Close the bag (metadata.yaml written); safe to call twice."""
        if not self.writer.closed:
            path = self.writer.close(self.get_clock().now().nanoseconds or None)
            self.get_logger().info(f"bag closed: {path.parent} ({self.writer.status()['messages']} messages)")

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def main(args=None) -> int:
    """SIGINT/SIGTERM stop the spin, then the bag is closed (see :mod:`simreal_ros.nodes.shutdown`)."""
    return run_node(RecorderNode, args, NODE_NAME)


if __name__ == "__main__":
    raise SystemExit(main())
