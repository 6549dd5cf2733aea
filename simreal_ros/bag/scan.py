"""Walk one MCAP file record by record and account for every byte: what reads back, what is lost.

The recovery (:mod:`simreal_ros.bag.recover`) decides from this what to keep, and reports
from it what was lost. The file is parsed here with explicit bounds, not with the reader the
recovery repairs for: a corrupt length field can neither make it allocate more than the file
holds nor make it jump over good data.

What is trusted:

* a chunk whose decompressed records match its CRC (a chunk with CRC 0 only when reached by
  walking from a good record: after damage it cannot be told from noise);
* records outside chunks that parse exactly, reached by walking from a good record;
* the summary section, if the footer's CRC over it matches;
* ``simreal.channel`` metadata records (the writer's second copy of each channel definition,
  see :func:`channel_record`) whose own checksum matches.

After damage (a chunk that fails its CRC, a record that does not parse, a torn tail) the walk
searches forward for the next chunk with a valid CRC or the next ``simreal.channel`` record
and carries on from there. A damaged chunk's header (log-time range) and the message index
records after it, if they still parse, tell what it held.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

from mcap.records import Channel, Message, Schema

from simreal_ros.bag.records import (
    CHANNEL_RECORD,
    MAGIC,
    OP_ATTACHMENT,
    OP_CHANNEL,
    OP_CHUNK,
    OP_CHUNK_INDEX,
    OP_DATA_END,
    OP_FOOTER,
    OP_HEADER,
    OP_MESSAGE,
    OP_MESSAGE_INDEX,
    OP_METADATA,
    OP_SCHEMA,
    OP_STATISTICS,
    Chunk,
    Cursor,
    FileScan,
    Lost,
    RecordError,
    channel_record,
    parse_channel,
    parse_channel_record,
    parse_schema,
    read_chunk,
)

__all__ = ["CHANNEL_RECORD", "MAGIC", "FileScan", "Lost", "channel_record", "iter_messages", "scan"]

_FOOTER_LEN = 1 + 8 + 20 + len(MAGIC)


class _Walker:
    def __init__(self, path: Path, buf: Any, size: int) -> None:
        self.buf, self.size = buf, size
        self.s = FileScan(path, size)

    # ------------------------------------------------------------------ helpers
    def _u64(self, pos: int) -> int:
        return struct.unpack_from("<Q", self.buf, pos)[0]

    def _metadata(self, c: Cursor) -> tuple[str, dict[str, str]]:
        name = c.string()
        data = c.str_map()
        c.done()
        return name, data

    def _add_defs(self, schemas: list[Schema], channels: list[Channel]) -> None:
        for sch in schemas:
            self.s.schemas.setdefault(sch.id, sch)
        for ch in channels:
            self.s.channels.setdefault(ch.id, ch)

    def _channel_record(self, data: dict[str, str]) -> bool:
        parsed = parse_channel_record(data)
        if parsed is None:
            return False
        ch, sch = parsed
        self._add_defs([sch] if sch else [], [ch])
        return True

    def _resync(self, start: int, limit: int) -> int:
        """Offset of the next verifiable record at or after ``start`` (``limit`` if none)."""
        buf, q = self.buf, start
        name = struct.pack("<I", len(CHANNEL_RECORD)) + CHANNEL_RECORD.encode()
        while q < limit:
            cands = [p for p in (buf.find(b"\x06", q, limit), buf.find(b"\x0c", q, limit)) if p >= 0]
            if not cands:
                return limit
            p = min(cands)
            if p + 9 + 40 <= limit:
                if buf[p] == OP_CHUNK:
                    try:
                        read_chunk(buf, p, limit, need_crc=True)
                        return p
                    except RecordError:
                        pass
                elif buf[p + 9:p + 9 + len(name)] == name:
                    try:
                        _, data = self._metadata(Cursor(buf, p + 9, min(limit, p + 9 + self._u64(p + 1))))
                        if parse_channel_record(data) is not None:
                            return p
                    except RecordError:
                        pass
            q = p + 1
        return limit

    def _index_at(self, p: int, stop: int) -> tuple[int, list[tuple[int, int]], int] | None:
        """(channel id, [(log time, offset)], end) of a message index record at ``p`` ending by ``stop``."""
        if p + 9 > stop or self.buf[p] != OP_MESSAGE_INDEX:
            return None
        c = Cursor(self.buf, p + 9, p + 9 + self._u64(p + 1))
        if c.end > stop:
            return None
        try:
            cid, entries = c.u16(), c.pairs("<QQ", 16)
            c.done()
        except RecordError:
            return None
        return cid, entries, c.end

    def _index_chain(self, start: int, stop: int) -> dict[int, list[tuple[int, int]]] | None:
        """Message index records filling ``[start, stop)`` exactly, else None."""
        out, p = {}, start
        while p < stop:
            rec = self._index_at(p, stop)
            if rec is None:
                return None
            out[rec[0]], p = rec[1], rec[2]
        return out

    def _lose(self, pos: int, end: int, reason: str) -> None:
        lost = Lost(pos, end, reason)
        buf = self.buf
        if buf[pos] == OP_CHUNK and pos + 25 <= self.size:
            t0, t1 = struct.unpack_from("<QQ", buf, pos + 9)
            if t0 <= t1:
                lost.start_ns, lost.end_ns = t0, t1
            framed = pos + 9 + self._u64(pos + 1)
            if pos < framed < end:
                idx = self._index_chain(framed, end)
                if idx is not None and lost.start_ns is not None and all(
                        lost.start_ns <= t <= lost.end_ns for e in idx.values() for t, _ in e):
                    lost.counts = {cid: len(e) for cid, e in idx.items() if e}
        prev = self.s.chunks[-1] if self.s.chunks else None
        if prev is not None and prev.index_end <= pos and prev.end + sum(
                15 + 16 * n for n in prev.counts.values()) == end:
            self.s.problems.append(f"message index after the chunk at byte {prev.offset} is damaged (no messages "
                                   f"lost)")
            return
        self.s.lost.append(lost)

    # ------------------------------------------------------------------ sections
    def _footer(self) -> tuple[int, int, int, int] | None:
        buf, size = self.buf, self.size
        if size < len(MAGIC) + _FOOTER_LEN or buf[size - len(MAGIC):] != MAGIC:
            return None
        fpos = size - _FOOTER_LEN
        if buf[fpos] != OP_FOOTER or self._u64(fpos + 1) != 20:
            return None
        sstart, soff, crc = struct.unpack_from("<QQI", buf, fpos + 9)
        return fpos, sstart, soff, crc

    def _summary(self, fpos: int, sstart: int, crc: int) -> bool:
        buf = self.buf
        if not 8 <= sstart <= fpos:
            return False
        if crc and zlib.crc32(buf[fpos:fpos + 25], zlib.crc32(buf[sstart:fpos])) != crc:
            return False
        summary: dict[str, Any] = {"schemas": {}, "channels": {}, "chunk_indexes": [], "statistics": None}
        p = sstart
        try:
            while p < fpos:
                if p + 9 > fpos:
                    return False
                op = buf[p]
                c = Cursor(buf, p + 9, p + 9 + self._u64(p + 1))
                if c.end > fpos:
                    return False
                if op == OP_SCHEMA:
                    sch = parse_schema(c)
                    summary["schemas"][sch.id] = sch
                elif op == OP_CHANNEL:
                    ch = parse_channel(c)
                    summary["channels"][ch.id] = ch
                elif op == OP_STATISTICS:
                    n, _, _, _, _, chunks, t0, t1 = (c.u64(), c.u16(), c.u32(), c.u32(), c.u32(), c.u32(), c.u64(),
                                                     c.u64())
                    counts = dict(c.pairs("<HQ", 10))
                    summary["statistics"] = (n, chunks, t0, t1, {k: v for k, v in counts.items() if v})
                elif op == OP_CHUNK_INDEX:
                    t0, t1, off, length = c.u64(), c.u64(), c.u64(), c.u64()
                    mio = dict(c.pairs("<HQ", 10))
                    summary["chunk_indexes"].append((off, length, t0, t1, mio, c.u64()))
                p = c.end
        except RecordError:
            return False
        self.s.summary = summary
        return True

    def _check_summary(self) -> None:
        s, summ = self.s, self.s.summary
        why = []
        for kind, mine in (("schemas", s.schemas), ("channels", s.channels)):
            if any(k in mine and mine[k] != v for k, v in summ[kind].items()):
                why.append(f"its {kind} differ from the data's")
        stats = summ["statistics"]
        if stats is not None and stats != (s.message_count, len(s.chunks), s.start_ns or 0, s.end_ns or 0,
                                           dict(s.counts)):
            why.append("its statistics do not match the messages")
        mine_idx = [(c.offset, c.end - c.offset, c.start_ns, c.end_ns, c.index_offsets, c.index_end - c.end)
                    for c in s.chunks]
        if summ["chunk_indexes"] != mine_idx:
            why.append("its chunk indexes do not match the chunks")
        if why:
            s.problems.append("summary section: " + "; ".join(why))
        for kind, mine in (("schemas", s.schemas), ("channels", s.channels)):
            for k, v in summ[kind].items():
                mine.setdefault(k, v)

    def run(self) -> FileScan:
        s, buf, size = self.s, self.buf, self.size
        footer = self._footer()
        s.complete = footer is not None
        limit = size
        summary_ok = False
        if footer is not None:
            fpos, sstart, _, crc = footer
            limit = fpos
            if sstart:
                summary_ok = self._summary(fpos, sstart, crc)
                if summary_ok:
                    limit = sstart
                else:
                    s.problems.append("summary section is damaged (index only)")
        pos = len(MAGIC)
        if bytes(buf[:len(MAGIC)]) != MAGIC:
            if size > 9 and buf[8] == OP_HEADER:
                s.problems.append("the file's opening magic is damaged")
            else:
                pos = self._resync(0, limit)
                s.lost.append(Lost(0, pos, "no MCAP magic and header at the start"))
        data_end_seen = False
        while pos < limit:
            if limit - pos < 9:
                s.lost.append(Lost(pos, limit, "torn: the file ends inside a record"))
                break
            op = buf[pos]
            end = pos + 9 + self._u64(pos + 1)
            if op == OP_CHUNK:
                try:
                    chunk, schemas, channels, messages, problems = read_chunk(buf, pos, limit, need_crc=False)
                except RecordError as exc:
                    nxt = self._resync(pos + 1, limit)
                    self._lose(pos, nxt, str(exc))
                    pos = nxt
                    continue
                self._add_defs(schemas, channels)
                s.problems.extend(problems)
                for m, _ in messages:
                    s._add(m.channel_id, m.log_time)
                s.chunks.append(chunk)
                pos = self._chunk_indexes(chunk, messages, limit)
                continue
            if not OP_HEADER <= op <= OP_DATA_END or end > limit:
                nxt = self._resync(pos + 1, limit)
                torn = end > limit and OP_HEADER <= op <= OP_DATA_END and nxt == limit and footer is None
                self._lose(pos, nxt, "torn: the file ends inside a record" if torn
                           else f"not a valid record (opcode 0x{op:02x}, length {end - pos - 9})")
                pos = nxt
                continue
            try:
                self._record(op, pos, end)
            except RecordError as exc:
                nxt = self._resync(pos + 1, limit)
                self._lose(pos, nxt, f"record (opcode 0x{op:02x}) does not parse: {exc}")
                pos = nxt
                continue
            pos = end
            if op == OP_DATA_END:
                data_end_seen = True
                break
            if op == OP_FOOTER:
                break
        if s.complete and not data_end_seen and not s.lost:
            s.problems.append("no data-end record before the summary")
        if summary_ok:
            self._check_summary()
        if s.lost:  # what lost data implies anyway
            s.problems = [p for p in s.problems if not p.startswith(("data section CRC", "summary section"))]
        self._fill_time_gaps()
        return s

    def _record(self, op: int, pos: int, end: int) -> None:
        s, c = self.s, Cursor(self.buf, pos + 9, end)
        if op == OP_HEADER:
            c.string()
            s.library = c.string()
            c.done()
        elif op == OP_SCHEMA:
            self._add_defs([parse_schema(c)], [])
        elif op == OP_CHANNEL:
            self._add_defs([], [parse_channel(c)])
        elif op == OP_MESSAGE:
            cid, _, log = c.u16(), c.u32(), c.u64()
            s.messages.append((pos, end))
            s._add(cid, log)
        elif op == OP_METADATA:
            name, data = self._metadata(c)
            if name != CHANNEL_RECORD:
                s.metadata.append((name, data))
            elif not self._channel_record(data):
                s.problems.append(f"channel copy at byte {pos} fails its checksum")
        elif op == OP_MESSAGE_INDEX:
            c.u16()
            c.pairs("<QQ", 16)
            c.done()
        elif op == OP_DATA_END:
            (crc,) = struct.unpack_from("<I", self.buf, pos + 9)
            if crc and zlib.crc32(self.buf[:pos]) != crc:
                s.problems.append("data section CRC mismatch")
        elif op == OP_ATTACHMENT:
            s.problems.append(f"attachment at byte {pos} is not carried over by a rebuild")

    def _chunk_indexes(self, chunk: Chunk, messages: list[tuple[Message, int]], limit: int) -> int:
        """Walk the message index records after ``chunk``; they must index exactly its messages."""
        expected: dict[int, list[tuple[int, int]]] = {}
        for m, off in messages:
            expected.setdefault(m.channel_id, []).append((m.log_time, off))
        p, found = chunk.end, {}
        while (rec := self._index_at(p, limit)) is not None:
            found[rec[0]] = rec[1]
            chunk.index_offsets[rec[0]] = p
            p = rec[2]
        chunk.index_end = p
        if found != expected:
            self.s.problems.append(f"message index after the chunk at byte {chunk.offset} does not match it")
        return p

    def _fill_time_gaps(self) -> None:
        for lost in self.s.lost:
            if lost.start_ns is None:
                before = [c.end_ns for c in self.s.chunks if c.end <= lost.offset]
                after = [c.start_ns for c in self.s.chunks if c.offset >= lost.end]
                lost.start_ns = max(before) if before else None
                lost.end_ns = min(after) if after else None
                lost.time_from_neighbours = True


def scan(path: str | Path) -> FileScan:
    """Walk ``path`` (see the module docstring). Never raises for damaged content."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        s = FileScan(path, 0)
        s.lost.append(Lost(0, 0, "empty file"))
        return s
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _Walker(path, buf, size).run()


def iter_messages(s: FileScan) -> Iterator[Message]:
    """The messages of ``s`` that read back, in file order (re-read and re-verified from the file)."""
    items = sorted([(c.offset, c) for c in s.chunks] + [(m[0], m) for m in s.messages], key=lambda x: x[0])
    with open(s.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for _, item in items:
            if isinstance(item, Chunk):
                _, _, _, messages, _ = read_chunk(buf, item.offset, s.size, need_crc=False)
                for m, _ in messages:
                    yield m
            else:
                pos, end = item
                c = Cursor(buf, pos + 9, end)
                cid, seq, log, pub = c.u16(), c.u32(), c.u64(), c.u64()
                yield Message(channel_id=cid, sequence=seq, log_time=log, publish_time=pub, data=c.take(end - c.pos))
