"""``metadata.yaml`` of a rosbag2 bag (format version 9, as Jazzy/Kilted ``ros2 bag`` write it).

Both the writer (at a clean close) and the recovery (from what is on disk) describe the bag
with :class:`TopicInfo` and :class:`FileInfo` and write it with :func:`write_metadata`.
:func:`read_metadata` reads one back as untrusted input: bounded size, plain YAML only
(``yaml.safe_load``), and the fields the tools use checked for type, so a bad file gives one
:class:`MetadataError` naming the file and what is wrong instead of a traceback.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METADATA = "metadata.yaml"
VERSION = 9
#: larger metadata is refused unread (a real one is a few KiB per topic; this bounds an alias bomb too)
MAX_METADATA_BYTES = 4 * 1024 * 1024


class MetadataError(ValueError):
    """A bag's metadata.yaml is missing, unreadable or not rosbag2 metadata; the message names the file."""


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


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
    return "nothing" if value is None else names.get(type(value), f"a {type(value).__name__}")


def _load(path: Path) -> Any:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MetadataError(f"{path}: missing (the bag was not closed cleanly?)") from None
    except OSError as exc:
        raise MetadataError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise MetadataError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise MetadataError(f"{path}: is not a regular file")
    if st.st_size > MAX_METADATA_BYTES:
        raise MetadataError(f"{path}: {st.st_size} bytes, more than the {MAX_METADATA_BYTES} read for bag metadata")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise MetadataError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataError(f"{path}: more than the {MAX_METADATA_BYTES} bytes read for bag metadata")
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MetadataError(f"{path}: not UTF-8 text") from None
    except yaml.constructor.ConstructorError as exc:
        raise MetadataError(f"{path}: not plain YAML ({exc.problem}); only plain YAML is read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MetadataError(f"{path}: invalid YAML{where}: {what}") from None
    except RecursionError:
        raise MetadataError(f"{path}: YAML nested too deeply") from None


def topic_counts(meta: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Topic name -> (message type, message count) from a bag's metadata (as :func:`read_metadata`
    returns it); a topic listed more than once (one entry per file) has its counts summed."""
    out: dict[str, tuple[str, int]] = {}
    for t in meta.get("topics_with_message_count", []):
        name, kind = t["topic_metadata"]["name"], t["topic_metadata"]["type"]
        old = out.get(name, (kind, 0))
        out[name] = (kind, old[1] + int(t["message_count"]))
    return out


def read_metadata(bag_dir: str | Path) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` mapping of ``bag_dir/metadata.yaml``, checked.

    Checked (what the tools use): ``relative_file_paths`` is a list of plain file names inside
    the bag, topics are ``{topic_metadata: {name, type}, message_count}`` entries, and
    ``custom_data`` maps strings to scalars (returned as strings). Nothing else is traversed.

    Raises:
        MetadataError: the file is missing, too large, not a regular file, not plain YAML, or
            not rosbag2 metadata; the message names the file and the key.
    """
    path = Path(bag_dir) / METADATA
    data = _load(path)
    if not isinstance(data, dict):
        raise MetadataError(f"{path}: expected a mapping with key rosbag2_bagfile_information, got {_kind(data)}")
    info = data.get("rosbag2_bagfile_information")
    if not isinstance(info, dict):
        raise MetadataError(f"{path}: rosbag2_bagfile_information must be a mapping, got {_kind(info)}")
    files = info.get("relative_file_paths", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise MetadataError(f"{path}: relative_file_paths must be a list of file names")
    for f in files:
        if not f or "/" in f or "\\" in f or f in (".", ".."):
            raise MetadataError(f"{path}: relative_file_paths entry {f!r} is not a file name inside the bag")
    topics = info.get("topics_with_message_count", [])
    if not isinstance(topics, list):
        raise MetadataError(f"{path}: topics_with_message_count must be a list, got {_kind(topics)}")
    for i, t in enumerate(topics):
        tm = t.get("topic_metadata") if isinstance(t, dict) else None
        if not (isinstance(tm, dict) and isinstance(tm.get("name"), str) and isinstance(tm.get("type"), str)
                and isinstance(t.get("message_count"), int) and not isinstance(t.get("message_count"), bool)):
            raise MetadataError(f"{path}: topics_with_message_count[{i}] must have topic_metadata.name, "
                                f"topic_metadata.type and an integer message_count")
    custom = info.get("custom_data") or {}
    if not isinstance(custom, dict):
        raise MetadataError(f"{path}: custom_data must be a mapping, got {_kind(custom)}")
    for k, v in custom.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise MetadataError(f"{path}: custom_data entry {k!r} must map a string to a string, got {_kind(v)}")
    return {**info, "custom_data": {k: str(v) for k, v in custom.items()}}
