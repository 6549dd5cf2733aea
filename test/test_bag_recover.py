"""``simreal bag recover`` never loses what it was given.

Bags are written by the package's own BagWriter, then damaged at chosen chunks (offsets from
the ``mcap`` library's chunk index of the complete file, not from the code under test). The
result is read back by two independent readers (``rosbags`` and ``mcap``'s ``make_reader``)
and compared, topic by topic, with every message outside the damaged chunk; the damaged
original must still be on disk, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2._dynamic import serialize_dynamic
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from simreal_ros.bag import BagWriter
from simreal_ros.bag.types import message_definition
from simreal_ros.cli import main as simreal

JS, PT = "sensor_msgs/msg/JointState", "geometry_msgs/msg/PointStamped"
SENT, GOAL = "/simreal/shield/sent", "/simreal/goal"
TS = get_typestore(Stores.ROS2_KILTED)
ENC = {t: serialize_dynamic(t, message_definition(t)[0])[t] for t in (JS, PT)}
NAMES = [f"panda_joint{i}" for i in range(1, 8)]
READY = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
T0 = 1_700_000_000 * 10**9
DATA = 53  # a zstd chunk record: opcode, length, 3 x u64, crc, "zstd", u64 length, then the compressed data


def sent(i: int, names=NAMES, positions=None) -> bytes:
    """The shield's stamped sent command #i at 1 kHz: the ready pose with joint 1 ramping 0.01 rad/s."""
    q = list(READY) if positions is None else list(positions)
    if positions is None:
        q[0] = 1e-5 * i
    t = T0 + i * 1_000_000
    return ENC[JS]({"header": {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": ""},
                    "name": list(names), "position": q, "velocity": [], "effort": []})


def goal(i: int) -> bytes:
    return ENC[PT]({"header": {"stamp": {"sec": i, "nanosec": 0}, "frame_id": "base"},
                    "point": {"x": 0.5, "y": 0.001 * i, "z": 0.4}})


@dataclass
class Recording:
    torn: bytes  # the file as a SIGKILL leaves it after the last flush (no summary, no footer)
    complete: bytes  # the same file closed cleanly
    metadata: bytes  # metadata.yaml of the clean close
    chunks: list  # mcap ChunkIndex records of the complete file, in file order
    per_chunk: list[Counter]  # topic -> messages in each chunk
    ramp: list[list[int]]  # the SENT message numbers in each chunk

    @property
    def total(self) -> Counter:
        return sum(self.per_chunk, Counter())


def record(tmp_path: Path, n: int = 6000, **writer) -> Recording:
    bag = tmp_path / "rec"
    w = BagWriter(bag, flush_bytes=16 * 1024, flush_interval_s=3600, status_interval_s=0, **writer)
    w.add_topic(SENT, JS)
    w.add_topic(GOAL, PT)
    for i in range(n):
        w.write(SENT, sent(i), T0 + i * 1_000_000)
        if i % 50 == 0:
            w.write(GOAL, goal(i), T0 + i * 1_000_000 + 500)
    w.flush()
    torn = (bag / "rec_0.mcap").read_bytes()
    w.close()
    complete = (bag / "rec_0.mcap").read_bytes()
    assert complete.startswith(torn)
    with open(bag / "rec_0.mcap", "rb") as fh:
        reader = make_reader(fh)
        chunks = sorted(reader.get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset)
        per_chunk, ramp = [Counter() for _ in chunks], [[] for _ in chunks]
        starts = [c.message_start_time for c in chunks]
        for _s, ch, m in reader.iter_messages():
            k = int(np.searchsorted(starts, m.log_time, side="right")) - 1
            assert chunks[k].message_start_time <= m.log_time <= chunks[k].message_end_time
            per_chunk[k][ch.topic] += 1
            if ch.topic == SENT:
                ramp[k].append((m.log_time - T0) // 1_000_000)
    return Recording(torn, complete, (bag / "metadata.yaml").read_bytes(), chunks, per_chunk, ramp)


def damaged_bag(tmp_path: Path, rec: Recording, torn: bool, flips: list[int], name: str = "bag") -> Path:
    """A bag directory holding the torn (no metadata.yaml) or complete file, with bytes flipped."""
    bag = tmp_path / name
    bag.mkdir()
    data = bytearray(rec.torn if torn else rec.complete)
    for off in flips:
        data[off] ^= 0xFF
    (bag / "rec_0.mcap").write_bytes(bytes(data))
    if not torn:
        (bag / "metadata.yaml").write_bytes(rec.metadata)
    return bag


def in_data(rec: Recording, k: int) -> int:
    """A byte in the middle of chunk k's compressed data."""
    return rec.chunks[k].chunk_start_offset + DATA + rec.chunks[k].compressed_size // 2


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rosbags(bag: Path) -> tuple[Counter, list[int]]:
    """(messages per topic, SENT message numbers) as rosbags reads the bag."""
    counts, ramp = Counter(), []
    with Reader(bag) as reader:
        for conn, _t, raw in reader.messages():
            counts[conn.topic] += 1
            if conn.topic == SENT:
                msg = TS.deserialize_cdr(raw, conn.msgtype)
                ramp.append(int(round(msg.position[0] / 1e-5)))
                assert list(msg.name) == NAMES and np.allclose(msg.position[1:], READY[1:])
    return counts, sorted(ramp)


def read_mcap(bag: Path) -> Counter:
    counts = Counter()
    for path in sorted(bag.glob("*.mcap")):
        with open(path, "rb") as fh:
            for _s, ch, _m in make_reader(fh).iter_messages():
                counts[ch.topic] += 1
    return counts


def snapshot(bag: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(bag)): (sha(p.read_bytes()), p.stat().st_mtime_ns)
            for p in sorted(bag.rglob("*")) if p.is_file()}


def recover_cli(bag: Path, capsys) -> tuple[int, str, str]:
    rc = simreal(["bag", "recover", str(bag)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.out, out.err


def assert_kept_all_but(bag: Path, rec: Recording, lost: set[int]) -> None:
    expected = rec.total - sum((rec.per_chunk[k] for k in lost), Counter())
    counts, ramp = read_rosbags(bag)
    assert counts == expected
    assert read_mcap(bag) == expected
    assert ramp == sorted(i for k, r in enumerate(rec.ramp) if k not in lost for i in r)


@pytest.mark.parametrize("where", ["first", "middle"])
def test_a_corrupt_chunk_in_a_torn_file_loses_that_chunk_only(tmp_path, capsys, where):
    rec = record(tmp_path)
    k = 0 if where == "first" else len(rec.chunks) // 2
    bag = damaged_bag(tmp_path, rec, torn=True, flips=[in_data(rec, k)])
    given = (bag / "rec_0.mcap").read_bytes()
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0
    assert_kept_all_but(bag, rec, {k})
    # the file it was given is still there, unchanged
    assert sha((bag / "original" / "rec_0.mcap").read_bytes()) == sha(given)
    # the report says what was lost: topic counts and the chunk's log-time range
    c, lost = rec.chunks[k], rec.per_chunk[k]
    assert f"{sum(lost.values())} messages ({GOAL}: {lost[GOAL]}, {SENT}: {lost[SENT]})" in out if lost[GOAL] else \
        f"{sum(lost.values())} messages ({SENT}: {lost[SENT]})" in out
    assert f"log time {c.message_start_time / 1e9:.3f} to {c.message_end_time / 1e9:.3f} s" in out
    assert f"kept {sum(rec.total.values()) - sum(lost.values())} messages" in out
    assert "original kept unchanged" in out and str(bag / "original" / "rec_0.mcap") in out


def test_a_broken_chunk_frame_is_skipped_by_scanning_forward_to_the_next_valid_chunk(tmp_path, capsys):
    rec = record(tmp_path)
    k = len(rec.chunks) // 3
    c = rec.chunks[k]
    # the chunk's inner data-length field (its framing): the walk cannot step over it by length
    bag = damaged_bag(tmp_path, rec, torn=True, flips=[c.chunk_start_offset + DATA - 3])
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0
    assert_kept_all_but(bag, rec, {k})


def test_a_corrupt_record_length_field_alone_loses_nothing(tmp_path, capsys):
    rec = record(tmp_path)
    c = rec.chunks[5]
    bag = damaged_bag(tmp_path, rec, torn=True, flips=[c.chunk_start_offset + 3])  # +65536*k bytes
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0
    assert_kept_all_but(bag, rec, set())
    assert "nothing lost" in out and "record length field is wrong" in out


def test_several_damaged_chunks_and_a_torn_tail(tmp_path, capsys):
    rec = record(tmp_path)
    n = len(rec.chunks)
    bag = damaged_bag(tmp_path, rec, torn=True, flips=[in_data(rec, 1), in_data(rec, n // 2)])
    path = bag / "rec_0.mcap"
    last = rec.chunks[-1]
    path.write_bytes(path.read_bytes()[:last.chunk_start_offset + last.chunk_length // 2])  # torn inside the last
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0
    assert_kept_all_but(bag, rec, {1, n // 2, n - 1})
    assert out.count("    lost ") == 3 and "torn" in out and "messages: unknown" in out  # the tail's index is gone


def test_a_flipped_byte_in_a_complete_file_is_found_and_repaired(tmp_path, capsys):
    rec = record(tmp_path)
    k = len(rec.chunks) // 2
    bag = damaged_bag(tmp_path, rec, torn=False, flips=[in_data(rec, k)])
    given = (bag / "rec_0.mcap").read_bytes()
    # before: the tools say it does not read back (one line, exit 2), no traceback
    assert simreal(["bag", "check-limits", str(bag)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not read back" in err and "simreal bag recover" in err
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0 and "rebuilt" in out
    assert_kept_all_but(bag, rec, {k})
    assert sha((bag / "original" / "rec_0.mcap").read_bytes()) == sha(given)
    assert (bag / "original" / "metadata.yaml").read_bytes() == rec.metadata  # its counts changed: kept, replaced
    assert simreal(["bag", "check-limits", str(bag)]) == 0
    assert f"{sum(rec.total.values()) - sum(rec.per_chunk[k].values()) - rec.total[GOAL] + rec.per_chunk[k][GOAL]} " \
           f"commands on {SENT}" in capsys.readouterr().out
    # a flipped byte in the index or summary loses nothing, and is repaired too
    for flip in (rec.chunks[3].chunk_start_offset + rec.chunks[3].chunk_length + 20, len(rec.complete) - 200):
        bag2 = damaged_bag(tmp_path, rec, torn=False, flips=[flip], name=f"idx{flip}")
        rc, out, _ = recover_cli(bag2, capsys)
        assert rc == 0 and "rebuilt" in out and "nothing lost" in out, out
        assert_kept_all_but(bag2, rec, set())


def test_rerun_and_undamaged_bags_are_left_untouched(tmp_path, capsys):
    rec = record(tmp_path)
    bag = damaged_bag(tmp_path, rec, torn=True, flips=[in_data(rec, 2)])
    assert recover_cli(bag, capsys)[0] == 0
    before = snapshot(bag)
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0 and "nothing changed" in out
    assert snapshot(bag) == before  # same bytes, same mtimes, no new backup
    clean = tmp_path / "rec"  # closed cleanly by the writer
    before = snapshot(clean)
    rc, out, _ = recover_cli(clean, capsys)
    assert rc == 0 and "nothing changed" in out
    assert snapshot(clean) == before and not (clean / "original").exists()


def test_a_stale_metadata_file_is_rewritten_and_kept(tmp_path, capsys):
    rec = record(tmp_path, n=1000)
    bag = damaged_bag(tmp_path, rec, torn=False, flips=[])
    stale = rec.metadata.replace(b"message_count: 1020", b"message_count: 999")
    assert stale != rec.metadata
    (bag / "metadata.yaml").write_bytes(stale)
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0 and "kept as it was" in out and "metadata.yaml: rewritten" in out
    assert (bag / "original" / "metadata.yaml").read_bytes() == stale
    assert_kept_all_but(bag, rec, set())


def test_channel_definitions_lost_with_the_first_chunk_come_from_a_sibling_or_are_reported(tmp_path, capsys,
                                                                                          monkeypatch):
    """Files written before the writer kept a copy of each channel outside the chunks: the first
    chunk holds every definition. In a split bag the sibling file's are used (the writer numbers
    channels alike in every file); alone, the messages are reported lost by channel and time."""
    from mcap.writer import Writer

    monkeypatch.setattr(Writer, "add_metadata", lambda self, name, data: None)  # the old writer wrote none
    bag = tmp_path / "split"
    w = BagWriter(bag, flush_bytes=16 * 1024, flush_interval_s=3600, status_interval_s=0)
    w.add_topic(SENT, JS)
    w.add_topic(GOAL, PT)
    for i in range(4000):
        if i == 2000:
            w.split()
        w.write(SENT, sent(i), T0 + i * 1_000_000)
    w.flush()
    w._stream.close()  # the second file is torn
    monkeypatch.undo()
    second = bag / "split_1.mcap"
    with open(bag / "split_0.mcap", "rb") as fh:
        first_chunk = min(c.chunk_start_offset for c in make_reader(fh).get_summary().chunk_indexes)
    data = bytearray(second.read_bytes())
    data[first_chunk + DATA + 100] ^= 0xFF  # the same layout: its first chunk holds the channels
    second.write_bytes(bytes(data))
    rc, out, _ = recover_cli(bag, capsys)
    assert rc == 0 and f"channel of {SENT} taken from split_0.mcap" in out
    counts, ramp = read_rosbags(bag)
    lost = 4000 - counts[SENT]
    assert 0 < lost < 200 and ramp == [i for i in range(4000) if i < 2000 or i >= 2000 + lost]
    single = tmp_path / "single"
    single.mkdir()
    (single / "split_1.mcap").write_bytes(bytes(data))
    rc, _, err = recover_cli(single, capsys)  # alone, nothing says what its messages are
    assert rc == 1 and f"split_1.mcap: {2000 - lost} on channel id(s) [1]" in err and "nothing changed" in err
    assert sha((single / "split_1.mcap").read_bytes()) == sha(bytes(data))


@pytest.mark.parametrize("case", ["missing", "file", "empty", "not a bag", "sqlite"])
def test_not_a_bag_is_a_clear_error_and_changes_nothing(tmp_path, capsys, case):
    path = tmp_path / "x"
    if case == "file":
        path.write_text("hello")
    elif case != "missing":
        path.mkdir()
        if case == "not a bag":
            (path / "notes.txt").write_text("keep")
        if case == "sqlite":
            (path / "x_0.db3").write_bytes(b"SQLite format 3\x00")
    before = snapshot(path) if path.is_dir() else None
    rc, out, err = recover_cli(path, capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and str(path) in err
    if before is not None:
        assert snapshot(path) == before and not (path / "original").exists()


def test_a_bag_with_nothing_readable_is_left_as_it_is(tmp_path, capsys):
    bag = tmp_path / "garbage"
    bag.mkdir()
    junk = np.random.default_rng(0).bytes(100_000)
    (bag / "garbage_0.mcap").write_bytes(junk)
    rc, _, err = recover_cli(bag, capsys)
    assert rc == 1 and "nothing changed" in err and err.count("\n") == 1
    assert (bag / "garbage_0.mcap").read_bytes() == junk and sorted(p.name for p in bag.iterdir()) == ["garbage_0.mcap"]


@pytest.mark.parametrize("torn", [True, False])
def test_a_flipped_byte_anywhere_loses_at_most_the_chunk_it_is_in(tmp_path, capsys, torn):
    rec = record(tmp_path, n=1500)
    size = len(rec.torn if torn else rec.complete)
    for j, off in enumerate(np.linspace(0, size - 1, 16).astype(int)):
        bag = damaged_bag(tmp_path, rec, torn=torn, flips=[int(off)], name=f"at{j}")
        given = (bag / "rec_0.mcap").read_bytes()
        rc, out, _ = recover_cli(bag, capsys)
        assert rc == 0, (off, out)
        hit = {k for k, c in enumerate(rec.chunks) if c.chunk_start_offset <= off < c.chunk_start_offset + c.chunk_length}
        counts, _ = read_rosbags(bag)
        assert counts == read_mcap(bag) and counts >= rec.total - sum((rec.per_chunk[k] for k in hit), Counter()), off
        assert (bag / "original" / "rec_0.mcap").read_bytes() == given  # every damaged file is rebuilt, kept
