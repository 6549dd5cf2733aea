"""What the recorder has received, read from its ``/diagnostics`` status (ROS-free).

The recorder node publishes its bag's counters every ``status_interval_s`` under the status name
:data:`RECORDER_STATUS`, one ``<topic>.received`` value per topic it subscribed. A subscription
the graph names may match its publisher only later, so whoever starts a recorded run (the
excitation, a ``simreal sim`` session, a test) waits for these counts, not for the graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

RECORDER_STATUS = "recorder"
_SUFFIX = ".received"


def received(values: Mapping[str, str]) -> dict[str, int]:
    """``{topic: messages received}`` from the recorder status' key/values."""
    out = {}
    for key, value in values.items():
        if key.endswith(_SUFFIX):
            try:
                out[key[: -len(_SUFFIX)]] = int(value)
            except ValueError:
                continue
    return out


def not_received(values: Mapping[str, str] | None, topics: Iterable[str]) -> list[str]:
    """Of ``topics``, those the recorder has not received a message on yet (all, before its first status)."""
    counts = received(values or {})
    return [t for t in dict.fromkeys(topics) if counts.get(t, 0) <= 0]
