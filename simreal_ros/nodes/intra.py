"""Intra-process delivery between nodes composed in one process (issue 10).

rclpy has no intra-process communication: between two nodes of one process a message is
serialized, written to Fast DDS, taken back, deserialized and dispatched by the executor as
if it came from another machine. On the hot path (joint state -> estimate -> proposal -> sent
command) that per-message work, not the nodes' own callbacks, is most of each hop
(``bench/bench_graph_latency.py``), and composing the nodes on one executor only makes them
wait for each other's dispatch.

When delivery is enabled for a context (:func:`enable`, done by the composed runners of
``bringup.runner`` when every composed node's ``intra_process`` setting is on), a publisher made
with :func:`publisher` still writes every message to DDS (recorder, other processes, tools), and
then hands the message *object* to the callbacks of the subscriptions made with
:func:`subscription` on the same resolved topic and message type in this context, inside the
``publish`` call. Those subscriptions take nothing from DDS while such a publisher exists: a
subscription made before its topic's publisher drops its DDS reader when the publisher appears,
and takes it again when the last one goes. So while a publisher of the topic lives in the
process, a subscription hears only the process's own publishers (no other process publishes the
hot path's estimate or proposal).

Deliveries are breadth-first: every local subscriber of a message gets it before any message a
callback publishes in response, so the shield sees the estimate before the proposal computed
from it, as DDS would normally order them. Subscribers get the same object, so they must not
modify it (the nodes only read their inputs). A callback that raises stops the delivery and the
exception reaches the publishing callback, as it would reach the executor.

Without :func:`enable` (a node in its own process) both functions are rclpy's own calls.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

#: context id -> its bus (enabled contexts only)
_BUSES: dict[int, Bus] = {}


class Bus:
    """The local publishers and subscriptions of one context, by (resolved topic, message type)."""

    def __init__(self) -> None:
        self.publishers: dict[tuple, int] = {}
        self.subscriptions: dict[tuple, list[LocalSubscription]] = {}
        self._queue: deque = deque()
        self._draining = False
        self.delivered = 0  # messages handed to a local callback

    def add_publisher(self, key: tuple) -> None:
        self.publishers[key] = self.publishers.get(key, 0) + 1
        for sub in self.subscriptions.get(key, ()):
            sub.drop_dds()

    def remove_publisher(self, key: tuple) -> None:
        left = self.publishers.get(key, 0) - 1
        if left > 0:
            self.publishers[key] = left
            return
        self.publishers.pop(key, None)
        for sub in self.subscriptions.get(key, ()):
            sub.take_dds()

    def local(self, key: tuple) -> bool:
        return self.publishers.get(key, 0) > 0

    def deliver(self, key: tuple, msg) -> None:
        subs = self.subscriptions.get(key)
        if not subs:
            return
        self._queue.extend((s.callback, msg) for s in subs)
        if self._draining:  # a callback published in response: after this message's subscribers
            return
        self._draining = True
        try:
            while self._queue:
                callback, m = self._queue.popleft()
                self.delivered += 1
                callback(m)
        finally:
            self._queue.clear()
            self._draining = False


def enable(context) -> Bus:
    """Deliver between this context's publishers and subscriptions made here (idempotent)."""
    return _BUSES.setdefault(id(context), Bus())


def disable(context) -> None:
    _BUSES.pop(id(context), None)


def bus_of(node) -> Bus | None:
    return _BUSES.get(id(node.context))


def _key(node, msg_type, topic: str) -> tuple:
    return (node.resolve_topic_name(topic), msg_type)


class IntraPublisher:
    """An rclpy publisher that also delivers to the process's own subscriptions of its topic."""

    def __init__(self, node, bus: Bus, msg_type, topic: str, qos) -> None:
        self.node, self.bus = node, bus
        self.dds = node.create_publisher(msg_type, topic, qos)
        self.key = _key(node, msg_type, topic)
        bus.add_publisher(self.key)

    @property
    def topic_name(self) -> str:
        return self.dds.topic_name

    def publish(self, msg) -> None:
        self.dds.publish(msg)
        self.bus.deliver(self.key, msg)

    def destroy(self) -> None:
        if self.dds is not None:
            self.bus.remove_publisher(self.key)
            self.node.destroy_publisher(self.dds)
            self.dds = None


class LocalSubscription:
    """A subscription that takes from DDS only while no publisher of its topic is in the process."""

    def __init__(self, node, bus: Bus, msg_type, topic: str, callback: Callable, qos) -> None:
        self.node, self.bus, self.msg_type, self.topic, self.callback, self.qos = node, bus, msg_type, topic, callback, qos
        self.key = _key(node, msg_type, topic)
        self.dds = None
        bus.subscriptions.setdefault(self.key, []).append(self)
        if not bus.local(self.key):
            self.take_dds()

    @property
    def topic_name(self) -> str:
        return self.key[0]

    def take_dds(self) -> None:
        if self.dds is None:
            self.dds = self.node.create_subscription(self.msg_type, self.topic, self.callback, self.qos)

    def drop_dds(self) -> None:
        if self.dds is not None:
            self.node.destroy_subscription(self.dds)
            self.dds = None

    def destroy(self) -> None:
        subs = self.bus.subscriptions.get(self.key, [])
        if self in subs:
            subs.remove(self)
        self.drop_dds()


def publisher(node, msg_type, topic: str, qos):
    """``node.create_publisher``, delivering in-process too when the node's context is enabled."""
    bus = bus_of(node)
    if bus is None:
        return node.create_publisher(msg_type, topic, qos)
    return IntraPublisher(node, bus, msg_type, topic, qos)


def subscription(node, msg_type, topic: str, callback: Callable, qos):
    """``node.create_subscription``, fed in-process by a local publisher when the context is enabled."""
    bus = bus_of(node)
    if bus is None:
        return node.create_subscription(msg_type, topic, callback, qos)
    return LocalSubscription(node, bus, msg_type, topic, callback, qos)
