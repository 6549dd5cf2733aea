"""``metadata.yaml`` of a rosbag2 bag (format version 9, as Jazzy/Kilted ``ros2 bag`` write it).

Both the writer (at a clean close) and the recovery (from what is on disk) describe the bag
with :class:`TopicInfo` and :class:`FileInfo` and write it with :func:`write_metadata`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METADATA = "metadata.yaml"
VERSION = 9


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    type_hash: str = ""
    qos: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FileInfo:
    """One storage file: its name inside the bag directory, message count per topic, time span (ns)."""

    path: str
    counts: dict[str, int] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def add(self, topic: str, log_time_ns: int, n: int = 1) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + n
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)


def _span(start: int | None, end: int | None) -> tuple[int, int]:
    if start is None or end is None:
        return 0, 0
    return start, end - start


def build_metadata(topics: list[TopicInfo], files: list[FileInfo], custom_data: dict[str, str] | None = None) \
        -> dict[str, Any]:
    starts = [f.start_ns for f in files if f.start_ns is not None]
    ends = [f.end_ns for f in files if f.end_ns is not None]
    start, duration = _span(min(starts) if starts else None, max(ends) if ends else None)
    totals: dict[str, int] = {}
    for f in files:
        for t, n in f.counts.items():
            totals[t] = totals.get(t, 0) + n
    info = {
        "version": VERSION,
        "storage_identifier": "mcap",
        "relative_file_paths": [f.path for f in files],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": sum(totals.values()),
        "topics_with_message_count": [
            {"topic_metadata": {"name": t.name, "type": t.msgtype, "serialization_format": "cdr",
                                "offered_qos_profiles": t.qos, "type_description_hash": t.type_hash},
             "message_count": totals.get(t.name, 0)}
            for t in topics
        ],
        "compression_format": "",
        "compression_mode": "",
        "files": [
            {"path": f.path,
             "starting_time": {"nanoseconds_since_epoch": _span(f.start_ns, f.end_ns)[0]},
             "duration": {"nanoseconds": _span(f.start_ns, f.end_ns)[1]},
             "message_count": f.message_count}
            for f in files
        ],
        "custom_data": dict(custom_data or {}),
        "ros_distro": "kilted",
    }
    return {"rosbag2_bagfile_information": info}


def write_metadata(bag_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``metadata.yaml`` atomically (temp file, fsync, rename)."""
    path = Path(bag_dir) / METADATA
    tmp = path.with_suffix(".yaml.tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(metadata, fh, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_metadata(bag_dir: str | Path) -> dict[str, Any]:
    path = Path(bag_dir) / METADATA
    data = yaml.safe_load(path.read_text()) or {}
    if "rosbag2_bagfile_information" not in data:
        raise ValueError(f"{path}: not a rosbag2 metadata file (no rosbag2_bagfile_information)")
    return data["rosbag2_bagfile_information"]
