"""Make a crash-torn or damaged bag readable again without losing what it was given (``simreal bag recover``).

A killed :class:`~simreal_ros.bag.writer.BagWriter` leaves ``.mcap`` files whose last one has
no summary and no footer (and possibly a torn last chunk), and no ``metadata.yaml``; a flipped
byte on disk can break any chunk or index. Readers (``rosbags``, ``ros2 bag``) refuse such a
bag. :func:`recover`:

1. walks every ``.mcap`` file record by record (:mod:`simreal_ros.bag.scan`): every chunk's
   CRC, every message, the index and summary against the data. A complete, undamaged file
   is kept untouched;
2. rebuilds any other file from everything in it that reads back: a damaged chunk is
   skipped and the walk carries on with the next valid one; a channel definition lost with
   a chunk comes from the writer's ``simreal.channel`` copy or, for files this package's
   writer wrote, from a sibling file. The rebuilt file is written beside the original,
   verified, and only then takes its name; the original stays on disk unchanged in
   ``<bag>/original/`` (a hard link, so no copy). A file with nothing readable is moved there;
3. writes ``metadata.yaml`` from the files (keeping the old file's ``custom_data``), unless
   the old one already describes them; an old one that is replaced, bad or not, is kept in
   ``<bag>/original/`` too;
4. reads the whole bag back with ``rosbags`` and checks every topic's message count.

The :class:`RecoveryReport` says per file what was kept, what was lost (topic: count where
the damaged chunk's index survived, log-time range) and where the original is. A re-run on
a recovered (or undamaged) bag changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import yaml
from mcap.records import Channel, Schema
from mcap.writer import CompressionType, Writer

from simreal_ros.bag.metadata import (
    METADATA,
    FileInfo,
    MetadataError,
    TopicInfo,
    build_metadata,
    read_metadata,
    write_metadata,
)
from simreal_ros.bag.records import RecordError
from simreal_ros.bag.recovery_report import FileReport, LostPart, RecoveryReport
from simreal_ros.bag.scan import CHANNEL_RECORD, MAGIC, FileScan, channel_record, iter_messages, scan
from simreal_ros.bag.types import UnknownTypeError, message_definition

ORIGINALS = "original"
RECOVER_LIBRARY = "simreal_ros.bag.recover"
WRITER_LIBRARY = "simreal_ros.bag (mcap)"  # BagWriter's: its files number channels alike (writer.LIBRARY)


class BagInputError(ValueError):
    """The path is not a bag that can be recovered (nothing was changed)."""


class RecoveryError(RuntimeError):
    """The recovered bag does not read back as expected; the originals are kept."""


def storage_files(bag: Path) -> list[Path]:
    """The bag's ``.mcap`` files in split order (``<name>_<index>.mcap``)."""
    def index(p: Path) -> tuple[int, str]:
        m = re.search(r"_(\d+)\.mcap$", p.name)
        return (int(m.group(1)) if m else -1, p.name)

    return sorted((p for p in bag.glob("*.mcap") if p.is_file()), key=index)


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


def needs_recovery(bag: str | Path) -> bool:
    """True if the bag has no metadata.yaml or a storage file without a footer (a quick test: damage
    inside a complete file is found by :func:`recover`, or by a reader)."""
    bag = Path(bag)
    return not (bag / METADATA).exists() or any(not is_complete(p) for p in storage_files(bag))


# ---------------------------------------------------------------------- definitions
def _topic_info(channel: Channel, schema: Schema) -> TopicInfo:
    text = channel.metadata.get("offered_qos_profiles", "")
    try:
        qos = yaml.safe_load(text) if text and len(text) < 65536 else []
    except yaml.YAMLError:
        qos = []
    type_hash = channel.metadata.get("topic_type_hash", "")
    if not type_hash:
        try:
            type_hash = message_definition(schema.name)[1]
        except UnknownTypeError:
            type_hash = ""
    ok = isinstance(qos, list) and all(isinstance(q, dict) for q in qos)
    return TopicInfo(channel.topic, schema.name, type_hash, qos if ok else [])


def _definitions(scans: list[FileScan]) -> list[tuple[dict[int, tuple[Channel, Schema | None]], dict[str, str]]]:
    """Per file: channel id -> (channel, schema) for every channel it uses, and topic -> the sibling
    whose definition was borrowed. Only between files of :data:`WRITER_LIBRARY` (which registers
    every topic in the same order in each file), and only if the siblings agree."""
    out = []
    for s in scans:
        defs = {cid: (ch, s.schemas.get(ch.schema_id)) for cid, ch in s.channels.items()
                if ch.schema_id in (0, *s.schemas)}
        borrowed: dict[str, str] = {}
        if s.library == WRITER_LIBRARY:
            for cid in s.undefined:
                found = {}
                for o in scans:
                    if o is not s and o.library == WRITER_LIBRARY and cid in o.channels:
                        ch = o.channels[cid]
                        sch = o.schemas.get(ch.schema_id)
                        if ch.schema_id and sch is None:
                            continue
                        key = (ch.topic, ch.message_encoding, sch.name if sch else "", sch.data if sch else b"")
                        found.setdefault(key, (ch, sch, o.path.name))
                if len(found) == 1:
                    ch, sch, src = next(iter(found.values()))
                    defs[cid] = (ch, sch)
                    borrowed[ch.topic] = src
        out.append((defs, borrowed))
    return out


# ---------------------------------------------------------------------- files
def _same_content(a: Path, b: Path) -> bool:
    if os.path.samefile(a, b):
        return True
    if a.stat().st_size != b.stat().st_size:
        return False

    def digest(p: Path) -> bytes:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.digest()

    return digest(a) == digest(b)


def _keep_original(bag: Path, path: Path, move: bool) -> Path:
    """Put ``path``'s current content into ``bag/original/`` (never over another kept file) and return
    where it is. A regular file is hard-linked (copied if links are not supported) unless ``move``;
    anything else (a directory in place of metadata.yaml) is moved."""
    dest_dir = bag / ORIGINALS
    dest_dir.mkdir(exist_ok=True)
    regular = path.is_file() and not path.is_symlink()
    n = 0
    while True:
        dest = dest_dir / (path.name if n == 0 else f"{path.name}.{n}")
        if not os.path.lexists(dest):
            break
        if regular and dest.is_file() and _same_content(path, dest):  # kept by an earlier, interrupted run
            if move:
                path.unlink()  # its bytes are in dest
            return dest
        n += 1
    if move or not regular:
        os.rename(path, dest)
    else:
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)
            with open(dest, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(dest_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dest


def _rebuild(s: FileScan, defs: dict[int, tuple[Channel, Schema | None]], tmp: Path) -> FileInfo:
    """Write what reads back of ``s`` (messages on channels with a definition) as a complete file."""
    info = FileInfo(s.path.name)
    with open(tmp, "wb") as out:
        writer = Writer(out, chunk_size=512 * 1024, compression=CompressionType.ZSTD, enable_data_crcs=True)
        writer.start(profile="ros2", library=RECOVER_LIBRARY)
        schema_ids: dict[tuple[str, str, bytes], int] = {}
        new_ids: dict[int, tuple[int, str]] = {}
        for cid in sorted(defs):
            ch, sch = defs[cid]
            sid = 0
            if sch is not None:
                key = (sch.name, sch.encoding, sch.data)
                sid = schema_ids.get(key) or writer.register_schema(sch.name, sch.encoding, sch.data)
                schema_ids[key] = sid
            new = writer.register_channel(ch.topic, ch.message_encoding, sid, ch.metadata)
            copy = channel_record(
                Channel(id=new, topic=ch.topic, message_encoding=ch.message_encoding, schema_id=sid,
                        metadata=ch.metadata),
                None if sch is None else Schema(id=sid, name=sch.name, encoding=sch.encoding, data=sch.data))
            if copy is not None:
                writer.add_metadata(CHANNEL_RECORD, copy)
            new_ids[cid] = (new, ch.topic)
        for name, data in s.metadata:
            writer.add_metadata(name, data)
        for m in iter_messages(s):
            if m.channel_id in new_ids:
                new, topic = new_ids[m.channel_id]
                writer.add_message(new, m.log_time, m.data, m.publish_time, m.sequence)
                info.add(topic, m.log_time)
        writer.finish()
        out.flush()
        os.fsync(out.fileno())
    return info


def _mcap_counts(path: Path) -> Counter | None:
    """Messages per topic as the ``mcap`` library's indexed reader returns them (None if it fails)."""
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as fh:
            return Counter(ch.topic for _s, ch, _m in make_reader(fh).iter_messages())
    except Exception:  # noqa: BLE001 - any failure of the other reader is the verdict
        return None


def _file_info(s: FileScan, defs: dict[int, tuple[Channel, Schema | None]]) -> FileInfo:
    info = FileInfo(s.path.name)
    for cid, n in s.counts.items():
        t0, t1 = s.ranges[cid]
        info.add(defs[cid][0].topic, t0, n)
        info.add(defs[cid][0].topic, t1, 0)
    return info


def _discard(staged: list[tuple[FileScan, Path | None]], tmp: Path) -> None:
    for path in [tmp, *(t for _, t in staged if t is not None)]:
        path.unlink(missing_ok=True)


def _lost_parts(s: FileScan, defs: dict[int, tuple[Channel, Schema | None]]) -> list[LostPart]:
    def topic(cid: int) -> str:
        return defs[cid][0].topic if cid in defs else f"channel id {cid}"

    parts = [LostPart(x.reason, x.offset, x.end, None if x.counts is None else
                      dict(Counter({topic(c): n for c, n in x.counts.items()})), x.start_ns, x.end_ns,
                      x.time_from_neighbours) for x in s.lost]
    for cid, n in s.counts.items():
        if cid not in defs:
            t0, t1 = s.ranges[cid]
            parts.append(LostPart("its channel definition was in lost data", 0, 0, {f"channel id {cid}": n}, t0, t1))
    return parts


# ---------------------------------------------------------------------- the bag
def _same_metadata(old: dict, new: dict) -> bool:
    def key(m: dict) -> tuple:
        topics = {t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], t["message_count"])
                  for t in m.get("topics_with_message_count") or []}
        files = [(f.get("path"), f.get("message_count")) for f in m.get("files") or [] if isinstance(f, dict)]
        return (list(m.get("relative_file_paths") or []), topics, files, m.get("message_count"),
                m.get("storage_identifier"))
    return key(old) == key(new)


def _read_back(bag: Path) -> Counter:
    """Messages per topic as rosbags reads the whole bag (every message)."""
    from rosbags.rosbag2 import Reader

    out: Counter = Counter()
    try:
        with Reader(bag) as reader:
            for conn, _t, _raw in reader.messages():
                out[conn.topic] += 1
    except Exception as exc:  # noqa: BLE001 - any reader failure is the verdict, reported by name
        raise RecoveryError(f"{bag}: rosbags cannot read the recovered bag ({type(exc).__name__}: {exc}); "
                            f"the originals are in {bag / ORIGINALS}") from exc
    return out


def recover(bag: str | Path) -> RecoveryReport:
    """Make ``bag`` readable again, keeping every original (see the module docstring).

    Raises:
        BagInputError: ``bag`` is not a directory with ``.mcap`` files (nothing changed).
        RecoveryError: no file holds a readable message, or the result does not read back.
    """
    bag = Path(bag)
    if not bag.exists():
        raise BagInputError(f"{bag}: no such directory")
    if not bag.is_dir():
        raise BagInputError(f"{bag}: not a directory (a bag is a directory with .mcap files and {METADATA})")
    files = storage_files(bag)
    if not files:
        other = sorted(p.name for p in bag.glob("*.db3"))
        raise BagInputError(f"{bag}: not an MCAP bag: no .mcap files"
                            + (f" ({', '.join(other)}: sqlite3 bags are not supported)" if other else ""))
    if os.path.lexists(bag / ORIGINALS) and not (bag / ORIGINALS).is_dir():
        raise BagInputError(f"{bag / ORIGINALS}: exists and is not a directory (recover keeps the originals "
                            f"there); move it away")
    report = RecoveryReport(bag)
    old = None
    if os.path.lexists(bag / METADATA):
        try:
            old = read_metadata(bag)
        except MetadataError as exc:
            report.metadata_problem = str(exc).removeprefix(f"{bag / METADATA}: ")
    scans = [scan(p) for p in files]
    definitions = _definitions(scans)
    for s, (defs, _) in zip(scans, definitions):  # a second, independent reading of what looks intact
        if s.intact and _mcap_counts(s.path) != Counter({defs[c][0].topic: n for c, n in s.counts.items()}):
            s.problems.append("the mcap library's indexed reader fails or disagrees with the data")
    if not any(s.intact or any(c in d for c in s.counts) for s, (d, _) in zip(scans, definitions)):
        orphans = [f"{s.path.name}: {n} on channel id(s) {sorted(s.undefined)}"
                   for s in scans if (n := sum(s.undefined.values()))]
        raise RecoveryError(f"{bag}: no message in {', '.join(p.name for p in files)} reads back"
                            + (f" (messages without a channel definition, lost with damaged data: "
                               f"{'; '.join(orphans)})" if orphans else "") + "; nothing changed")

    infos: list[FileInfo] = []
    staged: list[tuple[FileScan, Path | None]] = []  # (scan, rebuilt temp file or None: leave out)
    topics: dict[str, TopicInfo] = {}
    for s, (defs, borrowed) in zip(scans, definitions):
        for _cid, (ch, sch) in sorted(defs.items()):
            if sch is not None and ch.topic not in topics:
                topics[ch.topic] = _topic_info(ch, sch)
        fr = FileReport(s.path.name, "kept", borrowed=borrowed)
        report.files.append(fr)
        if s.intact:
            info = _file_info(s, defs)
            infos.append(info)
            fr.messages = dict(info.counts)
            continue
        fr.lost, fr.problems = _lost_parts(s, defs), list(s.problems)
        if not any(c in defs for c in s.counts):
            fr.action = "left out"
            staged.append((s, None))
            continue
        tmp = s.path.with_name(s.path.name + ".recovering")
        try:
            info = _rebuild(s, defs, tmp)
        except RecordError as exc:  # the file changed since it was scanned (is a recorder still writing?)
            _discard(staged, tmp)
            raise RecoveryError(f"{s.path} changed while being recovered ({exc}); nothing changed") from None
        if not scan(tmp).intact or _mcap_counts(tmp) != Counter(info.counts):
            _discard(staged, tmp)
            raise RecoveryError(f"{s.path}: the rebuilt file does not verify; nothing changed")
        fr.action, fr.messages = "rebuilt", dict(info.counts)
        infos.append(info)
        staged.append((s, tmp))

    for s, tmp in staged:  # every rebuilt file verified: now keep the originals and swap
        fr = next(f for f in report.files if f.name == s.path.name)
        fr.original = _keep_original(bag, s.path, move=tmp is None)
        if tmp is not None:
            os.replace(tmp, s.path)

    custom = dict((old or {}).get("custom_data") or {})
    if report.changed:
        custom["simreal.recovered"] = "true"
    new = build_metadata(list(topics.values()), infos, custom)

    def write() -> None:
        report.metadata = "rewritten" if os.path.lexists(bag / METADATA) else "written"
        if report.metadata == "rewritten":
            report.metadata_original = _keep_original(bag, bag / METADATA, move=not (bag / METADATA).is_file())
        write_metadata(bag, new)

    if old is None or report.changed or not _same_metadata(old, new["rosbag2_bagfile_information"]):
        write()
    try:
        report.topics = dict(_read_back(bag))
    except RecoveryError as exc:
        if report.metadata != "unchanged":
            raise
        report.metadata_problem = f"rosbags cannot read it: {exc}"  # it describes the files, but not usably
        write()
        report.topics = dict(_read_back(bag))
    expected = Counter()
    for info in infos:
        expected.update(info.counts)
    if report.topics != {t: n for t, n in expected.items() if n}:
        raise RecoveryError(f"{bag}: rosbags reads {report.topics}, the files hold {dict(expected)}; "
                            f"the originals are in {bag / ORIGINALS}")
    return report
