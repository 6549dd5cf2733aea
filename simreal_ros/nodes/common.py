"""Shared plumbing of the ROS 2 nodes: message conversion and the ``main()`` boilerplate."""

from __future__ import annotations

import array
import signal
import sys
from typing import Callable, Sequence

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from simreal_ros.nodes.spin import EXECUTORS, SPIN_SETTINGS, SpinConfig, apply_niceness
from simreal_ros.nodes.wire import JointStateDecoder, RawJointState, WireFormatError

#: Latest-only inputs (the state a policy or the shield acts on, a proposal the shield steps on):
#: keep-last 1, so a consumer that fell behind takes the newest message instead of working through
#: a queue of old ones. Best effort for states (matches reliable and best-effort publishers, like
#: rclpy's sensor-data profile, whose depth of 5 queues 5 samples); proposals keep reliable.
LATEST_STATE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
LATEST_COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def make_executor(kind: str, context=None):
    """The executor named by :data:`EXECUTORS` (never rclpy's MultiThreadedExecutor: it loses messages)."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    if kind == "single_threaded":
        return SingleThreadedExecutor(context=context)
    raise ValueError(f"executor {kind!r}; allowed: {list(EXECUTORS)}")


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def sec_nsec(t: float) -> tuple[int, int]:
    """A time in seconds as a ROS stamp's (sec, nanosec)."""
    ns = int(round(t * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


def sec_to_stamp(t: float) -> TimeMsg:
    sec, nanosec = sec_nsec(t)
    return TimeMsg(sec=sec, nanosec=nanosec)


def take_joint_state(decoder: JointStateDecoder, buf: bytes) -> RawJointState:
    """A raw subscription's ``sensor_msgs/JointState`` (:mod:`simreal_ros.nodes.wire`); what the
    codec does not read (another encapsulation) goes through rclpy's deserializer instead. A buffer
    neither can read raises ValueError."""
    try:
        return decoder.decode(buf)
    except WireFormatError as exc:
        try:
            msg = deserialize_message(buf, JointState)
        except Exception as exc2:  # rclpy raises its own error types for a malformed buffer
            raise ValueError(f"unreadable JointState ({exc}; rclpy: {exc2})") from exc2
    return RawJointState(stamp_to_sec(msg.header.stamp), msg.header.frame_id, tuple(msg.name),
                         as_floats(msg.position), as_floats(msg.velocity), as_floats(msg.effort))


def doubles(values) -> array.array:
    """A float64 sequence field's value without rclpy's per-element conversion (an ``array('d')``
    is taken as it is)."""
    out = array.array("d")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64).ravel().tobytes())
    return out


def joint_state_msg(names: Sequence[str], stamp, position=None, velocity=None, effort=None) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = names if isinstance(names, list) else list(names)
    if position is not None:
        msg.position = doubles(position)
    if velocity is not None:
        msg.velocity = doubles(velocity)
    if effort is not None:
        msg.effort = doubles(effort)
    return msg


def as_floats(values) -> np.ndarray:
    """A received float64 sequence field (``array('d')``) as a numpy array, without a per-element copy."""
    if isinstance(values, array.array) and values.typecode == "d":
        return np.frombuffer(values, dtype=np.float64) if len(values) else np.zeros(0)
    return np.asarray(values, dtype=float)


def array_msg(values, label: str = "") -> Float64MultiArray:
    """std_msgs/Float64MultiArray as ros2_control's forward command controllers take it."""
    msg = Float64MultiArray()
    vals = np.asarray(values, dtype=float).ravel()
    if label:
        msg.layout.dim = [MultiArrayDimension(label=label, size=vals.size, stride=vals.size)]
    msg.data = doubles(vals)
    return msg


class JointOrder:
    """Reorder JointState arrays onto the robot's joint order (cached per name list).

    Raises ValueError naming both lists when the message's joints do not match.
    """

    def __init__(self, robot_joints: Sequence[str]) -> None:
        self.names = tuple(robot_joints)
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def index(self, msg_names: Sequence[str]) -> np.ndarray:
        key = tuple(msg_names)
        idx = self._cache.get(key)
        if idx is None:
            missing = [n for n in self.names if n not in key]
            if missing or len(set(key)) != len(key):
                raise ValueError(f"joint names {list(key)} do not cover the robot's joints {list(self.names)} "
                                 f"(missing: {missing})")
            idx = np.array([key.index(n) for n in self.names])
            self._cache[key] = idx
        return idx

    def arrays(self, msg: JointState) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(position, velocity or None, effort or None) in robot order."""
        idx = self.index(msg.name)
        n = len(msg.name)

        def pick(values):
            if len(values) != n:
                return None
            return as_floats(values)[idx]  # fancy indexing copies: the result owns its memory

        pos = pick(msg.position)
        if pos is None:
            raise ValueError(f"JointState has {len(msg.position)} positions for {n} names")
        return pos, pick(msg.velocity), pick(msg.effort)


def finite_positions(node: Node, order: JointOrder, msg: JointState, counts: dict[str, int],
                     topic: str = "") -> np.ndarray | None:
    """``msg``'s joint positions in robot order, or None for a malformed or non-finite state: counted
    as ``counts["bad_states"]`` and logged (throttled), never acted on."""
    try:
        q, _, _ = order.arrays(msg)
        if not np.all(np.isfinite(q)):
            raise ValueError("non-finite joint positions")
    except ValueError as exc:
        counts["bad_states"] += 1
        node.get_logger().error(f"ignoring state{f' on {topic}' if topic else ''}: {exc}", throttle_duration_sec=2.0)
        return None
    return q


#: QoS of the goal topic's publisher: latched (transient local), so a late subscriber gets it.
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def subscribe_goal(node: Node, msg_type, topic: str, callback) -> None:
    """Subscribe to a goal topic from latched *and* plain publishers.

    A transient-local subscription gets the goal a latched publisher (the sim bridge) sent
    before this node started, but does not match a volatile publisher (``ros2 topic pub``
    with default QoS); a volatile one matches both but gets no history. Both are created;
    a goal delivered twice is set twice, which is harmless.
    """
    node.create_subscription(msg_type, topic, callback, GOAL_QOS)
    node.create_subscription(msg_type, topic, callback, QoSProfile(depth=1))


def spin_config(node: Node) -> SpinConfig:
    """Declare (once) and read the :class:`SpinConfig` parameters of ``node``."""
    from simreal_ros.nodes.params import declare_and_read

    return SpinConfig(**declare_and_read(node, SPIN_SETTINGS))


def help_requested(args: Sequence[str] | None = None) -> bool:
    """True when the non-ROS arguments (``sys.argv`` when ``args`` is None) ask for ``-h``/``--help``."""
    argv = list(sys.argv[1:] if args is None else args)
    return any(a in ("-h", "--help") for a in remove_ros_args(args=argv))


def print_help(factory: Callable[[], Node], name: str) -> None:
    """What ``<node> --help`` prints: usage, the node's one-line purpose, where its parameters are."""
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    doc = ((module.__doc__ if module else None) or "").strip().splitlines()
    print(f"usage: {name} [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r FROM:=TO] ...]")
    if doc:
        print(doc[0].replace("``", ""))
    print(f"Parameters, their defaults and bounds: config/*.yaml in the simreal_ros share directory "
          f"(section '{name}'); `ros2 param describe /{name} <name>` on a running node.")


def run_node(factory: Callable[[], Node], args: Sequence[str] | None = None, name: str = "node") -> int:
    """``main()`` body of every node process: init, spin, stop cleanly on SIGINT/SIGTERM at any moment.

    rclpy's own signal handler shuts the context down from inside the signal, so a callback
    running at that moment (a long unpaced sim step, a bag write) fails with ``RCLError`` and
    the process exits 1 without the node's cleanup. Here the signal only sets a flag: the
    SingleThreadedExecutor (rclpy 9.1.2's MultiThreadedExecutor loses messages) finishes the
    current callback, the node is destroyed (its cleanup runs, e.g. the recorder closes its
    bag), and only then rclpy shuts down. The executor is the node's ``executor`` parameter
    (:class:`SpinConfig`, declared here on every node).

    ``-h``/``--help`` (outside ``--ros-args``) prints the usage and returns 0 without starting rclpy.

    A node that cannot start (bad parameter, robot description or policy bundle: a
    ``ValueError``, or rclpy's own range check) exits 1 with the reason on stderr; so does a
    node that sets ``exit_code`` (e.g. a lifecycle node whose autostart configure failed).
    """
    if help_requested(args):  # before rclpy.init: --help starts no node and sends nothing
        print_help(factory, name)
        return 0
    stop: list[int] = []
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, lambda s, _f: stop.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    code = 0
    try:
        node = factory()
        spin = spin_config(node)
        why = apply_niceness(spin.nice)
        if why:
            node.get_logger().warning(why)
        executor = make_executor(spin.executor)
        executor.add_node(node)
        while not stop and getattr(node, "exit_code", None) is None:
            executor.spin_once(timeout_sec=0.1)
        code = getattr(node, "exit_code", None) or 0
        executor.remove_node(node)
    except (ValueError, InvalidParameterValueException) as exc:  # ParameterError, BundleError, ... are ValueErrors
        print(f"[{name}] refusing to start: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


#: a ROS-free core's health level ("ok", "warn", "error") as a DiagnosticStatus level
DIAG_LEVEL = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def publish_status(node: Node, pub, status, values: dict) -> None:
    """Publish ``status`` (a ``DiagnosticStatus`` with level and message set) with ``values`` as
    its key/values (floats to 4 significant digits) in one ``DiagnosticArray`` stamped now."""
    status.values = [KeyValue(key=str(k), value=f"{v:.4g}" if isinstance(v, float) else str(v))
                     for k, v in values.items()]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)


def destroy_entities(node: Node, entities) -> None:
    """Destroy ``entities`` (publishers, subscriptions, services, timers) of ``node``: each with
    the first ``destroy_*`` that takes it."""
    for ent in entities:
        for destroy in (node.destroy_publisher, node.destroy_subscription, node.destroy_service,
                        node.destroy_timer):
            try:
                if destroy(ent):
                    break
            except (TypeError, AttributeError):
                continue
