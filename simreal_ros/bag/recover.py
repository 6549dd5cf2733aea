"""Make a bag whose writer was killed readable again (``simreal bag recover PATH``).

A killed :class:`~simreal_ros.bag.writer.BagWriter` leaves ``.mcap`` files whose last one has
no summary and no footer (and possibly a torn last chunk), and no ``metadata.yaml``; readers
(``rosbags``, ``ros2 bag``) refuse such a bag. :func:`recover`:

1. keeps every complete file as is (it has a footer: the writer finished it at a split);
2. rewrites each incomplete file from its records, up to the last record that reads back
   completely and whose chunk CRC matches (a torn chunk at the end is dropped), as a complete
   indexed MCAP file (written to a temporary file, fsynced, then renamed over the original);
3. writes ``metadata.yaml`` listing every file with its message counts.

It is idempotent: on a readable bag it changes nothing but ``metadata.yaml``. Files that do
not even start with the MCAP magic (killed before the first flush) are left out of the
metadata and reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Channel, Chunk, Message, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType, Writer

from simreal_ros.bag.metadata import METADATA, FileInfo, TopicInfo, build_metadata, write_metadata
from simreal_ros.bag.types import UnknownTypeError, message_definition

MAGIC = b"\x89MCAP0\r\n"


@dataclass
class RecoveryReport:
    bag: Path
    complete: list[str] = field(default_factory=list)  # files kept as they were
    rebuilt: dict[str, int] = field(default_factory=dict)  # file -> messages kept
    unreadable: list[str] = field(default_factory=list)  # files left out of the metadata
    messages: int = 0

    def summary(self) -> str:
        parts = [f"{self.bag}: {self.messages} messages in {len(self.complete) + len(self.rebuilt)} file(s)"]
        if self.rebuilt:
            parts.append("rebuilt " + ", ".join(f"{k} ({v} messages)" for k, v in self.rebuilt.items()))
        if self.unreadable:
            parts.append("left out (no MCAP data): " + ", ".join(self.unreadable))
        return "; ".join(parts)


def storage_files(bag: Path) -> list[Path]:
    """The bag's ``.mcap`` files in split order (``<name>_<index>.mcap``)."""
    def index(p: Path) -> tuple[int, str]:
        m = re.search(r"_(\d+)\.mcap$", p.name)
        return (int(m.group(1)) if m else -1, p.name)

    return sorted(bag.glob("*.mcap"), key=index)


def is_complete(path: Path) -> bool:
    """True if the file ends with a footer and the closing magic (the writer finished it)."""
    size = path.stat().st_size
    if size < 2 * len(MAGIC) + 29:
        return False
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC))
        fh.seek(-(len(MAGIC) + 29), os.SEEK_END)
        tail = fh.read()
    return head == MAGIC and tail[0] == 0x02 and tail[-len(MAGIC):] == MAGIC


class _Topics:
    """Topic descriptions collected from the files' channels and schemas."""

    def __init__(self) -> None:
        self.by_name: dict[str, TopicInfo] = {}

    def add(self, channel: Channel, schema: Schema | None) -> None:
        if channel.topic in self.by_name or schema is None:
            return
        qos_text = channel.metadata.get("offered_qos_profiles", "")
        qos = yaml.safe_load(qos_text) if qos_text else []
        type_hash = channel.metadata.get("topic_type_hash", "")
        if not type_hash:
            try:
                type_hash = message_definition(schema.name)[1]
            except UnknownTypeError:
                type_hash = ""
        self.by_name[channel.topic] = TopicInfo(channel.topic, schema.name, type_hash, qos if isinstance(qos, list)
                                                else [])


def _describe_complete(path: Path, topics: _Topics) -> FileInfo:
    with open(path, "rb") as fh:
        summary = make_reader(fh).get_summary()
    info = FileInfo(path.name)
    if summary is None or summary.statistics is None:
        raise McapError(f"{path}: no summary statistics")
    for cid, ch in summary.channels.items():
        topics.add(ch, summary.schemas.get(ch.schema_id))
        n = summary.statistics.channel_message_counts.get(cid, 0)
        if n:
            info.counts[ch.topic] = info.counts.get(ch.topic, 0) + n
    if summary.statistics.message_count:
        info.start_ns = summary.statistics.message_start_time
        info.end_ns = summary.statistics.message_end_time
    return info


def _salvage(path: Path):
    """Yield the records of a torn file that read back completely (torn tail dropped)."""
    with open(path, "rb") as fh:
        reader = StreamReader(fh, emit_chunks=True, validate_crcs=True)
        try:
            for record in reader.records:
                if isinstance(record, Chunk):
                    yield from breakup_chunk(record, validate_crc=True)  # raises on a torn chunk before yielding
                else:
                    yield record
        except Exception:  # noqa: BLE001 - EndOfFile, CRC mismatch, garbage length: the torn tail
            return


def _rebuild(path: Path, topics: _Topics) -> FileInfo:
    tmp = path.with_suffix(".mcap.recovering")
    info = FileInfo(path.name)
    schemas: dict[int, Schema] = {}
    new_schema: dict[int, int] = {}
    new_channel: dict[int, int] = {}
    topic_of: dict[int, str] = {}
    with open(tmp, "wb") as out:
        writer = Writer(out, compression=CompressionType.ZSTD)
        writer.start(profile="ros2", library="simreal_ros.bag.recover")
        for rec in _salvage(path):
            if isinstance(rec, Schema):
                schemas[rec.id] = rec
                new_schema[rec.id] = writer.register_schema(rec.name, rec.encoding, rec.data)
            elif isinstance(rec, Channel):
                sid = new_schema.get(rec.schema_id, 0)
                new_channel[rec.id] = writer.register_channel(rec.topic, rec.message_encoding, sid, rec.metadata)
                topic_of[rec.id] = rec.topic
                topics.add(rec, schemas.get(rec.schema_id))
            elif isinstance(rec, Message) and rec.channel_id in new_channel:
                writer.add_message(new_channel[rec.channel_id], rec.log_time, rec.data, rec.publish_time,
                                   rec.sequence)
                info.add(topic_of[rec.channel_id], rec.log_time)
        writer.finish()
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return info


def recover(bag: str | Path) -> RecoveryReport:
    """Rebuild what a crash left out so the bag opens again (see the module docstring)."""
    bag = Path(bag)
    if not bag.is_dir():
        raise FileNotFoundError(f"{bag}: not a bag directory")
    files = storage_files(bag)
    if not files:
        raise FileNotFoundError(f"{bag}: no .mcap files to recover")
    report = RecoveryReport(bag)
    topics = _Topics()
    infos: list[FileInfo] = []
    for path in files:
        with open(path, "rb") as fh:
            starts_ok = fh.read(len(MAGIC)) == MAGIC
        if not starts_ok:
            report.unreadable.append(path.name)
            continue
        if is_complete(path):
            infos.append(_describe_complete(path, topics))
            report.complete.append(path.name)
        else:
            info = _rebuild(path, topics)
            infos.append(info)
            report.rebuilt[path.name] = info.message_count
    report.messages = sum(i.message_count for i in infos)
    old = {}
    if (bag / METADATA).exists():
        try:
            old = (yaml.safe_load((bag / METADATA).read_text()) or {}).get("rosbag2_bagfile_information", {})
        except yaml.YAMLError:
            old = {}
    custom = dict(old.get("custom_data") or {})
    if report.rebuilt or report.unreadable:
        custom["simreal.recovered"] = "true"
    write_metadata(bag, build_metadata(list(topics.by_name.values()), infos, custom))
    return report


def needs_recovery(bag: str | Path) -> bool:
    """True if the bag has no metadata.yaml or a storage file without a footer."""
    bag = Path(bag)
    return not (bag / METADATA).exists() or any(not is_complete(p) for p in storage_files(bag))
