"""The recorder's settings, declared once (type, default, bounds, description): the recorder
node's parameters derive from :class:`RecorderConfig` and ``config/recorder.yaml`` shows its
defaults. No ROS imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simreal_ros.settings import setting, validate_fields

#: what a run is judged by: measurements, estimate, belief, goal, proposed commands and what the
#: policy computed for them (its per-cycle records and its bundle's identity), sent commands (the
#: controller's topic and the shield's stamped copy that ``simreal bag check-limits`` reads),
#: interventions, shadow-mode output, reverts, ground truth, diagnostics (see the topic map in
#: simreal_ros.nodes)
DEFAULT_TOPICS = (
    "/joint_states", "/simreal/state_estimate", "/simreal/state_covariance", "/simreal/belief", "/simreal/goal",
    "/simreal/policy/command", "/simreal/policy/record", "/simreal/policy/bundle", "/simreal/baseline/command", "/forward_position_controller/commands",
    "/simreal/shield/sent", "/simreal/shield/interventions", "/simreal/shield/shadow_command",
    "/simreal/shield/shadow_interventions", "/simreal/shield/revert", "/simreal/sim/ground_truth", "/diagnostics",
)


def _topics_check(entries: Any) -> str | None:
    names = []
    for e in entries:
        name, _, msgtype = str(e).partition(":")
        if not name.startswith("/"):
            return f"entry {e!r}: topic names must be absolute (start with '/')"
        if msgtype and msgtype.count("/") != 2:
            return f"entry {e!r}: type must be pkg/msg/Name"
        names.append(name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        return f"topics listed twice: {dup}"
    return None if entries else "needs at least one topic"


@dataclass(frozen=True)
class RecorderConfig:
    """What the recorder records, where, and how often it makes it crash-safe."""

    output_dir: str = setting("runs", "directory that receives the bag directory")
    bag_name: str = setting("", "bag directory name (empty: simreal_<UTC date>_<time>)")
    topics: tuple[str, ...] = setting(DEFAULT_TOPICS, "topics to record: 'name' (type from the graph) or "
                                      "'name:pkg/msg/Type'", check=_topics_check)
    storage: str = setting("mcap", "storage format (only mcap: crash-recoverable)", choices=("mcap",))
    compression: str = setting("zstd", "chunk compression", choices=("zstd", "none"))
    flush_interval_s: float = setting(1.0, "between flushes: the most a SIGKILL loses", unit="s", low=0.01,
                                      high=60.0)
    flush_kib: int = setting(512, "also flush once this much is pending", unit="KiB", low=1, high=1 << 20)
    max_bag_duration_s: float = setting(0.0, "split into a new file after this long (0: never)", unit="s",
                                        low=0.0, high=1e7)
    max_bag_size_mb: float = setting(0.0, "split into a new file at this size (0: never)", unit="MB", low=0.0,
                                     high=1e6)
    status_interval_s: float = setting(1.0, "between recorder status messages written into the bag "
                                       "(/simreal/recorder/status)", unit="s", low=0.05, high=3600.0)
    discovery_period_s: float = setting(0.5, "between graph polls for topics not yet found", unit="s", low=0.05,
                                        high=60.0)
    queue_depth: int = setting(1000, "subscription queue depth", low=1, high=100000)

    def __post_init__(self) -> None:
        validate_fields(self)

    def writer_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~simreal_ros.bag.writer.BagWriter` for these settings."""
        return {"flush_interval_s": self.flush_interval_s, "flush_bytes": self.flush_kib * 1024,
                "max_bag_duration_s": self.max_bag_duration_s, "max_bag_size_mb": self.max_bag_size_mb,
                "compression": self.compression, "status_interval_s": self.status_interval_s}
