"""Read a recorded run back (with rosbags, independently of the MCAP writer) and check it.

ROS-free: used by ``simreal sim``'s summary and by the end-to-end tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros import topics
from simreal_ros.shield.config import ShieldConfig

SENT_TOPIC = topics.SENT
STAMPED_SENT_TOPIC = topics.STAMPED_SENT  # the same commands, stamped with the shield's step time (JointState)
POLICY_TOPIC = topics.POLICY_COMMAND
BASELINE_TOPIC = topics.BASELINE_COMMAND
INTERVENTIONS_TOPIC = topics.INTERVENTIONS
DIAGNOSTICS_TOPIC = topics.DIAGNOSTICS


def bag_directory(opts: Any) -> Path | None:
    """Where the recorder of a graph built from ``opts`` wrote its bag (None if absent)."""
    path = Path(opts.output_dir).resolve() / opts.bag_name
    return path if path.exists() else None


def read_bag(bag: str | Path, topics: list[str] | None = None) -> dict[str, list[tuple[int, Any]]]:
    """``{topic: [(log_time_ns, decoded message), ...]}`` for ``topics`` (all when None)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t, raw in reader.messages(connections=conns):
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def commands(messages: list[tuple[int, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(times in s, command rows) of Float64MultiArray messages."""
    if not messages:
        return np.zeros(0), np.zeros((0, 0))
    return (np.array([t for t, _ in messages], dtype=float) * 1e-9,
            np.array([np.asarray(m.data, dtype=float) for _, m in messages]))


def scan_bag(bag: str | Path, shield: ShieldConfig) -> dict[str, Any]:
    """Counts per topic of interest and the limit violations of the sent commands.

    ``shield`` is the recording shield's settings, as the node loaded them
    (:func:`simreal_ros.bringup.graph.shield_config`): the check keeps its position margin and
    steps like it (``max_step_gap``, ``min_step``), in its command mode.
    """
    from simreal_ros.bag.check import STAMP_RESOLUTION, sent_commands
    from simreal_ros.robot import load_robot
    from simreal_ros.shield import check_limits

    data = read_bag(bag)
    t, sent, _ = sent_commands(bag, STAMPED_SENT_TOPIC, shield.command_mode)  # the shield's own step stamps
    violations = check_limits(load_robot(), t, sent, command_mode=shield.command_mode,
                              position_margin=shield.position_margin, max_step_gap=shield.max_step_gap,
                              min_step=shield.min_step, time_resolution=STAMP_RESOLUTION)
    return {
        "bag_messages": {k: len(v) for k, v in sorted(data.items())},
        "bag_sent_commands": len(data.get(SENT_TOPIC, [])),
        "bag_checked_commands": len(t),
        "bag_interventions": sum(len(m.status) for _, m in data.get(INTERVENTIONS_TOPIC, [])),
        "limit_violations": len(violations),
        "limit_violation_examples": [str(v) for v in violations[:5]],
    }
