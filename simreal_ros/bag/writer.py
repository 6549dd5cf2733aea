"""Crash-safe rosbag2 writer (MCAP storage), ROS-free: raw CDR bytes in, a ``ros2 bag`` bag out.

Built on the ``mcap`` library's writer (profile ``ros2``, schemas ``ros2msg``, encoding
``cdr``, as rosbag2's own MCAP plugin writes). What it adds:

* **Flushing**: the open chunk is closed and written through to the OS (and fsynced) every
  ``flush_interval_s`` or ``flush_bytes``, whichever comes first, so a killed process leaves
  a file whose complete chunks hold everything but the last interval.
* **metadata.yaml** at :meth:`BagWriter.close`; after a crash :func:`simreal_ros.bag.recover.recover`
  (``simreal bag recover PATH``) rebuilds it from the files.
* **Channel copies**: every channel definition is also written as a ``simreal.channel``
  metadata record outside the chunks (with its own CRC, see
  :func:`simreal_ros.bag.scan.channel_record`), so a lost chunk does not take the meaning of
  every later message on its channels with it; data-section CRCs are on.
* **Splitting** by duration or size into ``<name>_0.mcap``, ``<name>_1.mcap`` ... (every file
  complete and indexed once the next one starts).
* **Counters**: messages per topic, *late* messages (header stamp older than the previous
  one on that topic), *dropped* messages reported by the caller (e.g. DDS sample-lost events,
  a full queue); written into the bag on ``/simreal/recorder/status``
  (``diagnostic_msgs/DiagnosticArray``) every ``status_interval_s`` and into
  ``metadata.yaml``'s ``custom_data``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from mcap.records import Channel, Schema
from mcap.writer import CompressionType, Writer

from simreal_ros.bag.metadata import METADATA, FileInfo, TopicInfo, build_metadata, write_metadata
from simreal_ros.bag.records import CHANNEL_RECORD, channel_record
from simreal_ros.bag.types import has_header, header_stamp_ns, message_definition, typestore

STATUS_TOPIC = "/simreal/recorder/status"
STATUS_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
COMPRESSIONS = {"none": CompressionType.NONE, "zstd": CompressionType.ZSTD}
#: the MCAP header's library field of files this writer wrote (the recovery trusts their channel ids)
LIBRARY = "simreal_ros.bag (mcap)"


class BagError(RuntimeError):
    """The bag cannot be written as asked (existing path, unknown topic, closed writer)."""


class _Topic:
    def __init__(self, info: TopicInfo, msgdef: str) -> None:
        self.info = info
        self.msgdef = msgdef
        self.stamped = has_header(info.msgtype)
        self.last_stamp: int | None = None
        self.channel = 0
        self.late = 0
        self.dropped = 0


class BagWriter:
    """Write a rosbag2 bag (directory with ``.mcap`` files and ``metadata.yaml``).

    Args:
        path: bag directory to create (must not exist, or be empty).
        flush_interval_s: most time between flushes (s); the most a SIGKILL loses.
        flush_bytes: also flush once this many message bytes are pending.
        max_bag_duration_s: start a new file after this much recorded time (0: never).
        max_bag_size_mb: start a new file once the current one reaches this size (0: never).
        compression: chunk compression, ``zstd`` or ``none``.
        status_interval_s: period of the status messages written into the bag (0: never).
        fsync: fsync the file at each flush (survives power loss too, not just a killed process).
        clock: monotonic clock (s) used for flush/status timing.
    """

    def __init__(self, path: str | Path, *, flush_interval_s: float = 1.0, flush_bytes: int = 512 * 1024,
                 max_bag_duration_s: float = 0.0, max_bag_size_mb: float = 0.0, compression: str = "zstd",
                 status_interval_s: float = 1.0, fsync: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        if flush_bytes < 1:
            raise ValueError(f"flush_bytes must be >= 1, got {flush_bytes}")
        if max_bag_duration_s < 0 or max_bag_size_mb < 0 or status_interval_s < 0:
            raise ValueError("max_bag_duration_s, max_bag_size_mb and status_interval_s must be >= 0")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            raise BagError(f"{self.path} exists and is not empty; not overwriting a bag")
        self.path.mkdir(parents=True, exist_ok=True)
        self.name = self.path.name
        self.flush_interval_s = float(flush_interval_s)
        self.flush_bytes = int(flush_bytes)
        self.max_duration_ns = int(max_bag_duration_s * 1e9)
        self.max_size = int(max_bag_size_mb * 1024 * 1024)
        self.compression = COMPRESSIONS[compression]
        self.status_interval_s = float(status_interval_s)
        self.fsync = fsync
        self.clock = clock
        self.topics: dict[str, _Topic] = {}
        self.files: list[FileInfo] = []
        self.counters = {"flushes": 0, "dropped": 0, "late": 0, "write_errors": 0}
        self._stream: Any = None
        self._mcap: Writer | None = None
        self._schemas: dict[str, int] = {}
        self._pending = 0
        self._last_flush = clock()
        self._last_status = clock()
        self._last_log_ns = 0
        self.closed = False
        self._open_file()
        if self.status_interval_s > 0:
            self.add_topic(STATUS_TOPIC, STATUS_TYPE)

    # ------------------------------------------------------------------ files
    def _open_file(self) -> None:
        name = f"{self.name}_{len(self.files)}.mcap"
        self._stream = open(self.path / name, "wb")
        self._mcap = Writer(self._stream, chunk_size=self.flush_bytes, compression=self.compression,
                            enable_data_crcs=True)
        self._mcap.start(profile="ros2", library=LIBRARY)
        self._stream.flush()  # the magic and header are on disk before any message
        self._schemas = {}
        self.files.append(FileInfo(name))
        for topic in self.topics.values():
            self._register(topic)
        self._pending = 0

    def _register(self, topic: _Topic) -> None:
        t = topic.info
        sid = self._schemas.get(t.msgtype)
        if sid is None:
            sid = self._mcap.register_schema(t.msgtype, "ros2msg", topic.msgdef.encode())
            self._schemas[t.msgtype] = sid
        meta = {"offered_qos_profiles": yaml.safe_dump(t.qos) if t.qos else "[]", "topic_type_hash": t.type_hash}
        topic.channel = self._mcap.register_channel(t.name, "cdr", sid, meta)
        copy = channel_record(Channel(id=topic.channel, topic=t.name, message_encoding="cdr", schema_id=sid,
                                      metadata=meta),
                              Schema(id=sid, name=t.msgtype, encoding="ros2msg", data=topic.msgdef.encode()))
        if copy is not None:  # (always: ros2msg definitions are text)
            self._mcap.add_metadata(CHANNEL_RECORD, copy)

    def _close_file(self) -> None:
        self._mcap.finish()
        self._sync()
        self._stream.close()
        self._mcap = None

    def _sync(self) -> None:
        self._stream.flush()
        if self.fsync:
            os.fsync(self._stream.fileno())

    def split(self) -> None:
        """Finish the current file (complete, indexed) and continue in the next one."""
        self._check_open()
        self._close_file()
        self._open_file()

    # ------------------------------------------------------------------ topics and messages
    def add_topic(self, topic: str, msgtype: str, qos: Sequence[dict[str, Any]] = ()) -> None:
        """Declare a topic (idempotent for the same type). Raises for a second, different type."""
        self._check_open()
        known = self.topics.get(topic)
        if known is not None:
            if known.info.msgtype != msgtype:
                raise BagError(f"topic {topic} is recorded as {known.info.msgtype}, cannot add it as {msgtype}")
            return
        msgdef, rihs = message_definition(msgtype)
        t = _Topic(TopicInfo(topic, msgtype, rihs, list(qos)), msgdef)
        self._register(t)
        self.topics[topic] = t

    def write(self, topic: str, data: bytes | memoryview, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        """Write one serialized (CDR) message received at ``log_time_ns``."""
        self._check_open()
        t = self.topics.get(topic)
        if t is None:
            raise BagError(f"topic {topic} was not added (add_topic first)")
        data = bytes(data)
        if t.stamped:
            stamp = header_stamp_ns(data)
            if stamp is not None:
                if t.last_stamp is not None and stamp < t.last_stamp:
                    t.late += 1
                    self.counters["late"] += 1
                t.last_stamp = stamp if t.last_stamp is None else max(stamp, t.last_stamp)
        f = self.files[-1]
        if f.start_ns is not None and ((self.max_duration_ns and log_time_ns - f.start_ns >= self.max_duration_ns)
                                       or (self.max_size and self._file_size() >= self.max_size)):
            self.split()
            f = self.files[-1]
        self._mcap.add_message(t.channel, log_time_ns, data,
                               log_time_ns if publish_time_ns is None else publish_time_ns)
        f.add(topic, log_time_ns)
        self._last_log_ns = max(self._last_log_ns, log_time_ns)
        self._pending += len(data) + 31
        if self._pending >= self.flush_bytes or self.clock() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def _file_size(self) -> int:
        return self._stream.tell() + self._pending

    def count_dropped(self, topic: str, n: int = 1) -> None:
        """Record ``n`` messages on ``topic`` that were lost before reaching the writer."""
        if n <= 0:
            return
        self.counters["dropped"] += n
        if topic in self.topics:
            self.topics[topic].dropped += n

    # ------------------------------------------------------------------ periodic work
    def flush(self) -> None:
        """Close the open chunk and write it through to the file (fsync if enabled)."""
        self._check_open()
        self._mcap.flush()
        self._sync()
        self._pending = 0
        self._last_flush = self.clock()
        self.counters["flushes"] += 1

    def tick(self, now_ns: int | None = None) -> None:
        """Call often (e.g. every 100 ms): writes a status message and flushes when due."""
        self._check_open()
        now = self.clock()
        if self.status_interval_s > 0 and now - self._last_status >= self.status_interval_s:
            self.write_status(now_ns)
        if now - self._last_flush >= self.flush_interval_s:
            self.flush()

    def status(self) -> dict[str, str]:
        """Counters as strings (the values of the status message and of custom_data)."""
        out = {k: str(v) for k, v in self.counters.items()}
        out["messages"] = str(sum(f.message_count for f in self.files))
        out["files"] = str(len(self.files))
        for name, t in self.topics.items():
            if name == STATUS_TOPIC:
                continue
            n = sum(f.counts.get(name, 0) for f in self.files)
            out[f"{name}.received"] = str(n)
            out[f"{name}.late"] = str(t.late)
            out[f"{name}.dropped"] = str(t.dropped)
        return out

    def write_status(self, now_ns: int | None = None) -> None:
        """Write the counters into the bag on :data:`STATUS_TOPIC` at ``now_ns`` (default: the latest
        message's log time, so a bag on sim time stays on sim time; wall time if there is none)."""
        now_ns = int(now_ns) if now_ns is not None else (self._last_log_ns or time.time_ns())
        ts = typestore()
        T = ts.types
        level = 0 if self.counters["dropped"] == 0 and self.counters["write_errors"] == 0 else 1
        msg = T[STATUS_TYPE](
            header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
                sec=now_ns // 1_000_000_000, nanosec=now_ns % 1_000_000_000), frame_id=""),
            status=[T["diagnostic_msgs/msg/DiagnosticStatus"](
                level=level, name="simreal recorder", message="dropped messages" if level else "ok",
                hardware_id=self.name,
                values=[T["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in self.status().items()])])
        self._last_status = self.clock()
        self.write(STATUS_TOPIC, ts.serialize_cdr(msg, STATUS_TYPE), max(now_ns, self._last_log_ns))

    # ------------------------------------------------------------------ close
    def close(self, now_ns: int | None = None) -> Path:
        """Write a last status, finish the current file and write ``metadata.yaml``; returns its path."""
        if self.closed:
            return self.path / METADATA
        if self.status_interval_s > 0:
            self.write_status(now_ns)
        self._close_file()
        self.closed = True
        topics = [t.info for t in self.topics.values()]
        return write_metadata(self.path, build_metadata(topics, self.files, {f"simreal.{k}": v
                                                                             for k, v in self.status().items()}))

    def _check_open(self) -> None:
        if self.closed:
            raise BagError(f"bag {self.path} is closed")

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
