"""Check a recorded run's sent commands against every robot limit (ROS-free, reads with rosbags).

The shield publishes each sent command twice: on the controller's Float64MultiArray topic
(no stamp) and on ``/simreal/shield/sent`` as a JointState stamped with the shield's own step
time. The stamped copy is what to check: receive times carry transport jitter of a few ms,
which shows up as spurious acceleration/jerk "violations" whenever a limit is saturated. A bag
that does not read back is a :class:`BagReadError` saying what to run, not a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros.bag.metadata import MetadataError, read_metadata
from simreal_ros.bag.recover import needs_recovery
from simreal_ros.bag.types import typestore

STAMPED_SENT_TOPIC = "/simreal/shield/sent"


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


def sent_commands(bag: str | Path, topic: str = STAMPED_SENT_TOPIC, command_mode: str = "position",
                  rate: float = 0.0) -> tuple[np.ndarray, np.ndarray, str]:
    """(times in s, command rows, what the times are) of the commands recorded on ``topic``.

    JointState topics use their header stamps; Float64MultiArray topics the receive times,
    or nominal times ``k / rate`` when ``rate`` > 0.

    Raises:
        BagReadError: see :func:`read_topic`.
    """
    from simreal_ros.shield import stamped_commands

    msgtype, msgs = read_topic(bag, topic)
    if msgtype == "sensor_msgs/msg/JointState":
        times, rows = stamped_commands(msgs, command_mode)
        return times, rows, "the shield's step stamps"
    rows = np.array([np.asarray(m.data, dtype=float) for _, m in msgs])
    if rate > 0:
        return np.arange(len(rows)) / rate, rows, f"nominal times at {rate:g} Hz"
    return np.array([t for t, _ in msgs], dtype=float) * 1e-9, rows, "receive times (jitter inflates derivatives)"
