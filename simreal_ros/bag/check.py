"""Check a recorded run's sent commands against every robot limit (ROS-free, reads with rosbags).

The shield publishes each sent command twice: on the controller's Float64MultiArray topic
(no stamp, robot joint order by convention) and on ``/simreal/shield/sent`` as a JointState
stamped with the shield's own step time, with the joint names. The stamped copy is what to
check: receive times carry transport jitter of a few ms, which shows up as spurious
acceleration/jerk "violations" whenever a limit is saturated. Its values are mapped onto the
robot's joint order by ``msg.name`` (:func:`stamped_commands`); a message whose names are not
exactly the robot's joints is refused, never silently mis-mapped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from simreal_ros import topics
from simreal_ros.bag.metadata import MetadataError, read_metadata
from simreal_ros.bag.recover import needs_recovery
from simreal_ros.bag.types import typestore

STAMPED_SENT_TOPIC = topics.STAMPED_SENT
#: resolution of ROS stamps (integer ns), what check_limits allows the stamps as rounding
STAMP_RESOLUTION = 1e-9


def joint_index(names: tuple[str, ...], robot: Any) -> list[int]:
    """Where each of ``robot``'s joints is in a recorded message's ``names``.

    Raises:
        ValueError: the names are not exactly the robot's joints (missing, unknown or duplicate ones).
    """
    joints, wanted = tuple(robot.joint_names), set(robot.joint_names)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or set(names) != wanted:
        why = (f"duplicate joint(s) {dup}" if dup else
               f"missing {sorted(wanted - set(names))}, unknown {sorted(set(names) - wanted)}")
        raise ValueError(f"joint names {list(names)} are not the joints of {robot.name} {list(joints)} ({why})")
    return [names.index(j) for j in joints]


class BagReadError(ValueError):
    """A bag cannot be read as asked (not closed cleanly, damaged, no such topic, foreign joints)."""


def check_bag(bag: str | Path) -> dict[str, Any]:
    """The bag's checked metadata (see :func:`~simreal_ros.bag.metadata.read_metadata`).

    Raises:
        BagReadError: not a directory, not closed cleanly, or bad metadata; says what to run.
    """
    bag = Path(bag)
    if not bag.is_dir():
        raise BagReadError(f"{bag}: not a bag directory")
    try:
        meta = read_metadata(bag)
    except MetadataError as exc:
        raise BagReadError(f"{exc}; run: simreal bag recover {bag}") from None
    if needs_recovery(bag):
        raise BagReadError(f"{bag} was not closed cleanly (a file has no footer); run: simreal bag recover {bag}")
    return meta


def read_topic(bag: str | Path, topic: str) -> tuple[str, list[tuple[int, Any]]]:
    """(message type, [(log time ns, decoded message)]) of ``topic`` in a cleanly closed bag.

    Raises:
        BagReadError: see :func:`check_bag`; no such topic; or the bag does not read back
            (damaged: the reader's complaint is in the message).
    """
    from rosbags.rosbag2 import Reader

    check_bag(bag)
    try:
        with Reader(Path(bag)) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                raise BagReadError(f"no topic {topic} in {bag}")
            msgs = [(t, typestore().deserialize_cdr(raw, c.msgtype))
                    for c, t, raw in reader.messages(connections=conns)]
    except BagReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged bag fails in many ways; name it and say what to do
        raise BagReadError(f"{bag} does not read back ({type(exc).__name__}: {exc}); "
                           f"run: simreal bag recover {bag}") from None
    return conns[0].msgtype, msgs


def stamped_commands(messages: Iterable[Any], robot: Any, command_mode: str = "position") \
        -> tuple[np.ndarray, np.ndarray]:
    """(times in s, command rows in ``robot``'s joint order) of JointState messages (or
    ``(bag_time, msg)`` pairs), timed by ``header.stamp`` (the shield's own step times).

    Positions (``command_mode`` ``position``) or efforts (``effort``) are mapped by
    ``msg.name`` onto ``robot.joint_names``. Duck-typed (no ROS imports).

    The times are ``np.longdouble``: a float64 of seconds since 1970 (ROS time) resolves only
    0.24 us, which :func:`~simreal_ros.shield.check_limits` would see in the acceleration and
    jerk it derives at a saturated limit; it takes the differences in the times' own precision.

    Raises:
        ValueError: a message's names are not exactly the robot's joints (foreign robot,
            missing, extra or duplicate joints), or its values do not match its names; the
            message names the message, its names and the robot's.
    """
    if command_mode not in ("position", "effort"):
        raise ValueError(f"command_mode must be 'position' or 'effort', got {command_mode!r}")
    joints = tuple(robot.joint_names)
    times, rows = [], []
    order: tuple[str, ...] | None = None
    index: list[int] = []
    for k, item in enumerate(messages):
        msg = item[1] if isinstance(item, tuple) else item
        names = tuple(str(n) for n in msg.name)
        stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        where = f"message #{k} (stamp {stamp_ns * 1e-9:.6f} s)"
        if names != order:
            try:
                order, index = names, joint_index(names, robot)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        values = list(msg.effort if command_mode == "effort" else msg.position)
        if len(values) != len(names):
            raise ValueError(f"{where}: {len(values)} {command_mode} value(s) for {len(names)} joint names")
        times.append(stamp_ns)
        rows.append([float(values[i]) for i in index])
    return (np.asarray(times, dtype=np.int64).astype(np.longdouble) / np.longdouble(1e9),
            np.asarray(rows, dtype=float).reshape(len(rows), len(joints)))


def sent_commands(bag: str | Path, topic: str = STAMPED_SENT_TOPIC, command_mode: str = "position",
                  rate: float = 0.0, robot: Any = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(times in s, command rows in the robot's joint order, what the times are) of ``topic``.

    JointState topics use their header stamps and names (:func:`stamped_commands`);
    Float64MultiArray topics (robot joint order, no names) the receive times, or nominal
    times ``k / rate`` when ``rate`` > 0. ``robot`` defaults to ``load_robot()``.

    Raises:
        BagReadError: see :func:`read_topic`; a message that does not fit the robot.
    """
    if robot is None:
        from simreal_ros.robot import load_robot

        robot = load_robot()
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"rate must be finite and >= 0, got {rate}")
    msgtype, msgs = read_topic(bag, topic)
    if msgtype == "sensor_msgs/msg/JointState":
        try:
            times, rows = stamped_commands(msgs, robot, command_mode)
        except ValueError as exc:
            raise BagReadError(f"{bag} {topic}: {exc}") from None
        return times, rows, "the shield's step stamps"
    if msgtype != "std_msgs/msg/Float64MultiArray":
        raise BagReadError(f"{bag} {topic}: {msgtype} is not a command type (JointState or Float64MultiArray)")
    for k, (_, m) in enumerate(msgs):
        if len(m.data) != robot.n_joints:
            raise BagReadError(f"{bag} {topic}: message #{k} has {len(m.data)} values, {robot.name} has "
                               f"{robot.n_joints} joints")
    rows = np.array([np.asarray(m.data, dtype=float) for _, m in msgs]).reshape(len(msgs), robot.n_joints)
    if rate > 0:
        return np.arange(len(rows)) / rate, rows, f"nominal times at {rate:g} Hz"
    return np.array([t for t, _ in msgs], dtype=float) * 1e-9, rows, "receive times (jitter inflates derivatives)"
