"""MCAP records as the recovery reads them: bounded field parsing, chunk verification, the
``simreal.channel`` copy of a channel definition that :class:`~simreal_ros.bag.writer.BagWriter`
writes outside the chunks, and what a scan of a file found (:class:`FileScan`).

Every length read from the file is checked against the bytes that are really there before
anything is allocated or sliced, so a corrupt field raises :class:`RecordError` (naming what
is wrong) instead of allocating gigabytes or reading past a record. No third-party MCAP
parser: the recovery must not depend on the reader it repairs for.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard
from mcap.records import Channel, Message, Schema

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_MESSAGE_INDEX, OP_CHUNK_INDEX = range(1, 9)
OP_ATTACHMENT, OP_ATTACHMENT_INDEX, OP_STATISTICS, OP_METADATA, OP_METADATA_INDEX = range(9, 14)
OP_SUMMARY_OFFSET, OP_DATA_END = 14, 15
COMPRESSIONS = ("", "zstd", "lz4")
MAX_CHUNK_BYTES = 1 << 30  # a chunk header claiming more is damage (the writer's chunks are ~flush_bytes)
CHANNEL_RECORD = "simreal.channel"


class RecordError(Exception):
    """A record does not parse; the message says why."""


def channel_record(channel: Channel, schema: Schema | None) -> dict[str, str] | None:
    """The ``simreal.channel`` metadata record that repeats a channel definition outside any chunk
    (``None`` for a schema that is not UTF-8 text; ROS 2 schemas always are).

    The MCAP writer puts schemas and channels inside the chunk that is open when they are
    registered; if that chunk is lost, so is the meaning of every later message on the
    channel. This copy carries its own CRC (metadata records have none).
    """
    try:
        (schema.data if schema else b"").decode("utf-8")
    except UnicodeDecodeError:
        return None
    body = {"channel_id": str(channel.id), "topic": channel.topic, "message_encoding": channel.message_encoding,
            "channel_metadata": json.dumps(channel.metadata, sort_keys=True),
            "schema_id": str(schema.id if schema else 0), "schema_name": schema.name if schema else "",
            "schema_encoding": schema.encoding if schema else "",
            "schema_data": schema.data.decode("utf-8") if schema else ""}
    body["crc32"] = str(zlib.crc32(json.dumps(body, sort_keys=True).encode()))
    return body


def parse_channel_record(data: dict[str, str]) -> tuple[Channel, Schema | None] | None:
    """Inverse of :func:`channel_record`; ``None`` if the record's checksum does not match."""
    body = {k: v for k, v in data.items() if k != "crc32"}
    try:
        if str(zlib.crc32(json.dumps(body, sort_keys=True).encode())) != data.get("crc32"):
            return None
        meta = json.loads(body["channel_metadata"])
        sid = int(body["schema_id"])
        schema = Schema(id=sid, name=body["schema_name"], encoding=body["schema_encoding"],
                        data=body["schema_data"].encode()) if sid else None
        return Channel(id=int(body["channel_id"]), topic=body["topic"], message_encoding=body["message_encoding"],
                       schema_id=sid, metadata={str(k): str(v) for k, v in meta.items()}), schema
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


class Cursor:
    """Bounded little-endian field reader over ``buf[pos:end]``."""

    def __init__(self, buf: Any, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise RecordError("a field runs past the end of its record")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def _int(self, fmt: str, n: int) -> int:
        if self.pos + n > self.end:
            raise RecordError("a field runs past the end of its record")
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u16(self) -> int:
        return self._int("<H", 2)

    def u32(self) -> int:
        return self._int("<I", 4)

    def u64(self) -> int:
        return self._int("<Q", 8)

    def string(self) -> str:
        try:
            return self.take(self.u32()).decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("a string is not UTF-8") from None

    def pairs(self, fmt: str, size: int) -> list[tuple[int, ...]]:
        n = self.u32()
        if n % size:
            raise RecordError("an array's byte length is not a multiple of its element size")
        return list(struct.iter_unpack(fmt, self.take(n)))

    def str_map(self) -> dict[str, str]:
        n = self.u32()
        sub = Cursor(self.buf, self.pos, self.pos + n)
        if sub.end > self.end:
            raise RecordError("a map runs past the end of its record")
        out = {}
        while sub.pos < sub.end:
            k = sub.string()
            out[k] = sub.string()
        self.pos = sub.end
        return out

    def done(self) -> None:
        if self.pos != self.end:
            raise RecordError(f"{self.end - self.pos} unexpected byte(s) at the end of a record")


def parse_schema(c: Cursor) -> Schema:
    sid, name, enc = c.u16(), c.string(), c.string()
    data = c.take(c.u32())
    c.done()
    return Schema(id=sid, name=name, encoding=enc, data=data)


def parse_channel(c: Cursor) -> Channel:
    cid, sid, topic, enc = c.u16(), c.u16(), c.string(), c.string()
    meta = c.str_map()
    c.done()
    return Channel(id=cid, topic=topic, message_encoding=enc, schema_id=sid, metadata=meta)


@dataclass
class Chunk:
    """A chunk that reads back: byte range, log-time range, messages per channel id."""

    offset: int
    end: int
    start_ns: int
    end_ns: int
    counts: dict[int, int]
    index_offsets: dict[int, int] = field(default_factory=dict)  # its message index records
    index_end: int = 0


@dataclass
class Lost:
    """Bytes that do not read back. ``counts`` (per channel id) and the time range are what the
    damaged chunk's header and message index said, or ``None`` where nothing could be read."""

    offset: int
    end: int
    reason: str
    start_ns: int | None = None
    end_ns: int | None = None
    counts: dict[int, int] | None = None
    time_from_neighbours: bool = False  # the range is the gap between the good chunks around it


@dataclass
class FileScan:
    """Everything :func:`scan` found in one file."""

    path: Path
    size: int
    library: str = ""
    complete: bool = False  # ends with a footer and the closing magic
    schemas: dict[int, Schema] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    messages: list[tuple[int, int]] = field(default_factory=list)  # top-level message records (offset, end)
    metadata: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # other metadata records
    counts: dict[int, int] = field(default_factory=dict)  # messages that read back, per channel id
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # their log-time range, per channel id
    start_ns: int | None = None
    end_ns: int | None = None
    lost: list[Lost] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # damage that loses no message (index, summary...)
    summary: dict[str, Any] | None = None

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    @property
    def undefined(self) -> dict[int, int]:
        """Messages per channel id whose channel definition (or its schema) is nowhere in the file."""
        return {c: n for c, n in self.counts.items() if c not in self.channels
                or self.channels[c].schema_id not in (0, *self.schemas)}

    @property
    def intact(self) -> bool:
        return self.complete and not self.lost and not self.problems and not self.undefined

    def _add(self, cid: int, log_ns: int, n: int = 1) -> None:
        self.counts[cid] = self.counts.get(cid, 0) + n
        t0, t1 = self.ranges.get(cid, (log_ns, log_ns))
        self.ranges[cid] = (min(t0, log_ns), max(t1, log_ns))
        self.start_ns = log_ns if self.start_ns is None else min(self.start_ns, log_ns)
        self.end_ns = log_ns if self.end_ns is None else max(self.end_ns, log_ns)


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    if size > MAX_CHUNK_BYTES:
        raise RecordError(f"chunk header claims {size} uncompressed bytes")
    if compression == "":
        raw = data
    elif compression == "zstd":
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
            parts, got = [], 0
            while got <= size:  # in pieces: a corrupt size field must not allocate up front
                part = reader.read(min(size + 1 - got, 1 << 20))
                if not part:
                    break
                parts.append(part)
                got += len(part)
            raw = b"".join(parts)
        except zstandard.ZstdError as exc:
            raise RecordError(f"zstd data does not decompress ({exc})") from None
    else:
        try:
            import lz4.frame
        except ImportError:
            raise RecordError("lz4 chunk and no lz4 package installed") from None
        try:
            raw = lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=size + 1)
        except RuntimeError as exc:
            raise RecordError(f"lz4 data does not decompress ({exc})") from None
    if len(raw) != size:
        raise RecordError(f"chunk decompresses to {len(raw)} bytes, its header says {size}")
    return raw


def read_chunk(buf: Any, pos: int, limit: int, need_crc: bool) \
        -> tuple[Chunk, list[Schema], list[Channel], list[tuple[Message, int]], list[str]]:
    """Parse and verify the chunk record at ``pos``: (chunk, schemas, channels, [(message, offset
    in the chunk)], problems). Its extent comes from its inner fields, not the record's length
    field (a corrupt length field alone loses nothing). Raises :class:`RecordError`."""
    c = Cursor(buf, pos + 9, limit)
    start_ns, end_ns, usize, crc = c.u64(), c.u64(), c.u64(), c.u32()
    clen = c.u32()
    if clen > 8:
        raise RecordError("chunk compression name is not one of 'zstd', 'lz4', ''")
    compression = c.take(clen).decode("ascii", "replace")
    if compression not in COMPRESSIONS:
        raise RecordError(f"unknown chunk compression {compression!r}")
    data_len = c.u64()
    if c.pos + data_len > limit:
        raise RecordError("torn: the chunk runs past the end of the file")
    if need_crc and crc == 0:
        raise RecordError("chunk without CRC")
    if usize > MAX_CHUNK_BYTES:
        raise RecordError(f"chunk header claims {usize} uncompressed bytes")
    raw = _decompress(compression, c.take(data_len), usize)
    if crc and zlib.crc32(raw) != crc:
        raise RecordError("chunk CRC mismatch")
    chunk = Chunk(pos, c.pos, start_ns, end_ns, {})
    problems = []
    length = struct.unpack_from("<Q", buf, pos + 1)[0]
    if pos + 9 + length != chunk.end:
        problems.append(f"chunk at byte {pos}: its record length field is wrong (data intact)")
    schemas, channels, messages = [], [], []
    r = Cursor(raw, 0, len(raw))
    while r.pos < r.end:
        at = r.pos
        op, n = r.take(1)[0], r.u64()
        sub = Cursor(raw, r.pos, r.pos + n)
        if sub.end > r.end:
            raise RecordError("a record inside the chunk runs past its end")
        if op == OP_SCHEMA:
            schemas.append(parse_schema(sub))
        elif op == OP_CHANNEL:
            channels.append(parse_channel(sub))
        elif op == OP_MESSAGE:
            cid, seq, log, pub = sub.u16(), sub.u32(), sub.u64(), sub.u64()
            messages.append((Message(channel_id=cid, sequence=seq, log_time=log, publish_time=pub,
                                     data=raw[sub.pos:sub.end]), at))
        r.pos = sub.end
    times = [m.log_time for m, _ in messages]
    if times and (min(times) != start_ns or max(times) != end_ns):
        problems.append(f"chunk at byte {pos}: its header's time range does not match its messages (data intact)")
    for m, _ in messages:
        chunk.counts[m.channel_id] = chunk.counts.get(m.channel_id, 0) + 1
    return chunk, schemas, channels, messages, problems
