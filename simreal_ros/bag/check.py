"""Check a recorded run's sent commands against every robot limit (ROS-free, reads with rosbags).

The shield publishes each sent command twice: on the controller's Float64MultiArray topic
(no stamp) and on ``/simreal/shield/sent`` as a JointState stamped with the shield's own step
time. The stamped copy is what to check: receive times carry transport jitter of a few ms,
which shows up as spurious acceleration/jerk "violations" whenever a limit is saturated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simreal_ros.bag.recover import needs_recovery
from simreal_ros.bag.types import typestore

STAMPED_SENT_TOPIC = "/simreal/shield/sent"


def sent_commands(bag: str | Path, topic: str = STAMPED_SENT_TOPIC, command_mode: str = "position",
                  rate: float = 0.0) -> tuple[np.ndarray, np.ndarray, str]:
    """(times in s, command rows, what the times are) of the commands recorded on ``topic``.

    JointState topics use their header stamps; Float64MultiArray topics the receive times,
    or nominal times ``k / rate`` when ``rate`` > 0.

    Raises:
        ValueError: the bag was not closed cleanly, or has no such topic.
    """
    from rosbags.rosbag2 import Reader

    from simreal_ros.shield import stamped_commands

    if needs_recovery(bag):
        raise ValueError(f"{bag} was not closed cleanly; run: simreal bag recover {bag}")
    with Reader(Path(bag)) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            raise ValueError(f"no topic {topic} in {bag}")
        msgs = [(t, typestore().deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]
    if conns[0].msgtype == "sensor_msgs/msg/JointState":
        times, rows = stamped_commands(msgs, command_mode)
        return times, rows, "the shield's step stamps"
    rows = np.array([np.asarray(m.data, dtype=float) for _, m in msgs])
    if rate > 0:
        return np.arange(len(rows)) / rate, rows, f"nominal times at {rate:g} Hz"
    return np.array([t for t, _ in msgs], dtype=float) * 1e-9, rows, "receive times (jitter inflates derivatives)"
