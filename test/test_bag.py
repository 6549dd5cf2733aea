"""The crash-safe bag writer, read back by independent readers.

The writer is built on the ``mcap`` library; bags are read back with ``rosbags`` (its own
MCAP parser and CDR decoder) and messages are encoded with ``mcap_ros2``'s CDR encoder, so
no byte passes through the same implementation twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2._dynamic import serialize_dynamic
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from simreal_ros.bag import STATUS_TOPIC, BagError, BagWriter, needs_recovery, recover
from simreal_ros.bag.types import UnknownTypeError, message_definition
from simreal_ros.cli import main as simreal

JS = "sensor_msgs/msg/JointState"
PT = "geometry_msgs/msg/PointStamped"
TS = get_typestore(Stores.ROS2_KILTED)
ENC = {t: serialize_dynamic(t, message_definition(t)[0])[t] for t in (JS, PT)}
NAMES = [f"panda_joint{i}" for i in range(1, 8)]


def joint_state(i: int) -> bytes:
    return ENC[JS]({"header": {"stamp": {"sec": i // 1000, "nanosec": (i % 1000) * 1_000_000}, "frame_id": ""},
                    "name": NAMES, "position": [i + 0.1 * k for k in range(7)], "velocity": [0.5 * i] * 7,
                    "effort": [-1.0 * i] * 7})


def point(i: int) -> bytes:
    return ENC[PT]({"header": {"stamp": {"sec": i, "nanosec": 0}, "frame_id": "base"},
                    "point": {"x": i, "y": 2.0 * i, "z": 0.5}})


def read_all(path: Path) -> dict[str, list]:
    """Topic -> decoded messages, by rosbags (fails if the bag is not readable)."""
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, _t, raw in reader.messages():
            out.setdefault(conn.topic, []).append(TS.deserialize_cdr(raw, conn.msgtype))
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert {t: len(v) for t, v in out.items()} == {t: n for t, n in counts.items() if n}
    return out


def test_clean_close_reads_back_identically(tmp_path):
    bag = tmp_path / "run"
    with BagWriter(bag, flush_interval_s=0.05) as w:
        w.add_topic("/joint_states", JS)
        w.add_topic("/simreal/goal", PT)
        for i in range(3000):
            w.write("/joint_states", joint_state(i), 1_000_000_000 + i * 1_000_000)
            if i % 100 == 0:
                w.write("/simreal/goal", point(i // 100), 1_000_000_000 + i * 1_000_000)
    msgs = read_all(bag)
    assert len(msgs["/joint_states"]) == 3000 and len(msgs["/simreal/goal"]) == 30
    for i in (0, 1234, 2999):
        m = msgs["/joint_states"][i]
        assert list(m.name) == NAMES
        assert np.allclose(m.position, [i + 0.1 * k for k in range(7)]) and np.allclose(m.effort, -1.0 * i)
        assert m.header.stamp.sec == i // 1000 and m.header.stamp.nanosec == (i % 1000) * 1_000_000
    assert msgs["/simreal/goal"][7].point.y == 14.0 and msgs["/simreal/goal"][7].header.frame_id == "base"
    # the MCAP library with the ROS 2 decoder (what Foxglove-like tools use) agrees
    with open(bag / "run_0.mcap", "rb") as fh:
        decoded = [m for _s, _c, _m, m in
                   make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages("/joint_states")]
    assert len(decoded) == 3000 and list(decoded[42].position) == [42 + 0.1 * k for k in range(7)]
    assert not needs_recovery(bag)
    assert simreal(["bag", "info", str(bag)]) == 0


def test_splits_by_duration_and_size(tmp_path):
    with BagWriter(tmp_path / "d", max_bag_duration_s=1.0, status_interval_s=0) as w:
        w.add_topic("/joint_states", JS)
        for i in range(3500):  # 3.5 s at 1 kHz of log time
            w.write("/joint_states", joint_state(i), i * 1_000_000)
    files = sorted(p.name for p in (tmp_path / "d").glob("*.mcap"))
    assert files == ["d_0.mcap", "d_1.mcap", "d_2.mcap", "d_3.mcap"]
    js = read_all(tmp_path / "d")["/joint_states"]
    assert [m.position[0] for m in js] == list(range(3500))

    with BagWriter(tmp_path / "s", max_bag_size_mb=0.1, flush_bytes=16 * 1024, compression="none") as w:
        w.add_topic("/joint_states", JS)
        for i in range(2000):
            w.write("/joint_states", joint_state(i), i * 1_000_000)
    sizes = [p.stat().st_size for p in (tmp_path / "s").glob("*.mcap")]
    assert len(sizes) >= 5 and max(sizes) < 0.1 * 1024 * 1024 + 20 * 1024
    assert len(read_all(tmp_path / "s")["/joint_states"]) == 2000


def test_late_and_dropped_messages_are_counted_into_the_bag(tmp_path):
    bag = tmp_path / "c"
    w = BagWriter(bag)
    w.add_topic("/joint_states", JS)
    for i in (0, 1, 2, 1, 3):  # the second "1" is late: its stamp is older than the previous one
        w.write("/joint_states", joint_state(i), time.time_ns())
    w.count_dropped("/joint_states", 4)
    w.close()
    status = read_all(bag)[STATUS_TOPIC][-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert values["/joint_states.late"] == "1" and values["/joint_states.dropped"] == "4"
    assert values["/joint_states.received"] == "5" and status.level == 1
    meta = (bag / "metadata.yaml").read_text()
    assert "simreal.dropped: '4'" in meta and "simreal.late: '1'" in meta


def test_torn_last_chunk_is_cut_and_the_rest_recovered(tmp_path):
    bag = tmp_path / "t"
    w = BagWriter(bag, flush_bytes=10**9, flush_interval_s=3600, status_interval_s=0)
    w.add_topic("/joint_states", JS)
    for i in range(500):
        w.write("/joint_states", joint_state(i), i * 1_000_000)
    w.flush()
    flushed = (bag / "t_0.mcap").stat().st_size
    for i in range(500, 900):
        w.write("/joint_states", joint_state(i), i * 1_000_000)
    w.flush()
    w._stream.close()  # simulate the crash: no summary, no footer, no metadata.yaml
    full = (bag / "t_0.mcap").stat().st_size
    with open(bag / "t_0.mcap", "r+b") as fh:
        fh.truncate((flushed + full) // 2)  # the second chunk is torn in half
    assert needs_recovery(bag)
    with pytest.raises((FileNotFoundError, ReaderError)):  # what every reader says today
        Reader(bag).open()
    report = recover(bag)
    assert report.rebuilt == {"t_0.mcap": 500} and report.messages == 500
    assert [m.position[0] for m in read_all(bag)["/joint_states"]] == list(range(500))
    assert recover(bag).messages == 500 and not needs_recovery(bag)  # idempotent


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {test_dir!r})
    from test_bag import joint_state
    from simreal_ros.bag import BagWriter
    w = BagWriter({bag!r}, flush_interval_s=0.1, max_bag_size_mb=0.2, status_interval_s=0.5)
    w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    i = 0
    flushes = 0
    while True:
        w.write("/joint_states", joint_state(i), time.time_ns())
        i += 1
        if w.counters["flushes"] != flushes:  # everything written before this flush is on disk
            flushes = w.counters["flushes"]
            print(i, flush=True)
        w.tick()
        time.sleep(0.0002)
""")


def test_sigkill_mid_write_then_recover_loses_at_most_the_last_flush_interval(tmp_path):
    bag = tmp_path / "k"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(test_dir=str(Path(__file__).parent),
                                                                   bag=str(bag))],
                             stdout=subprocess.PIPE, text=True)
    try:
        durable = 0
        while durable < 8000:  # several split files' worth
            line = child.stdout.readline()
            assert line, "writer child died"
            durable = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not (bag / "metadata.yaml").exists() and needs_recovery(bag)
    out = subprocess.run([sys.executable, "-m", "simreal_ros.cli", "bag", "recover", str(bag)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "rebuilt" in out.stdout
    msgs = read_all(bag)
    positions = [m.position[0] for m in msgs["/joint_states"]]
    # every message flushed before the kill is back, in order, without gaps
    assert positions[:durable] == list(range(durable))
    assert positions == list(range(len(positions)))
    assert len(list(bag.glob("*.mcap"))) >= 3 and STATUS_TOPIC in msgs
    meta = (bag / "metadata.yaml").read_text()
    assert f"message_count: {len(positions) + len(msgs[STATUS_TOPIC])}" in meta
    assert "simreal.recovered: 'true'" in meta


def test_bad_use_gets_clear_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(BagError, match="not empty"):
        BagWriter(tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    w = BagWriter(tmp_path / "b")
    with pytest.raises(BagError, match="add_topic"):
        w.write("/nope", b"\x00\x01\x00\x00", 1)
    with pytest.raises(UnknownTypeError, match="no message definition"):
        w.add_topic("/x", "nonexistent_msgs/msg/Thing")
    w.add_topic("/j", JS)
    with pytest.raises(BagError, match="cannot add it as"):
        w.add_topic("/j", PT)
    w.close()
    with pytest.raises(BagError, match="closed"):
        w.write("/j", joint_state(0), 1)
    assert simreal(["bag", "recover", str(tmp_path / "missing")]) == 2


def test_check_limits_on_recorded_commands(tmp_path, capsys):
    fa = "std_msgs/msg/Float64MultiArray"
    enc = serialize_dynamic(fa, message_definition(fa)[0])[fa]
    ready = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]

    def record(name, jump_at=None):
        with BagWriter(tmp_path / name, status_interval_s=0) as w:
            w.add_topic("/forward_position_controller/commands", fa)
            for k in range(100):
                q = list(ready)
                if jump_at is not None and k >= jump_at:
                    q[0] += 0.5  # 0.5 rad in 10 ms: far beyond 2.175 rad/s
                w.write("/forward_position_controller/commands",
                        enc({"layout": {"dim": [], "data_offset": 0}, "data": q}), 10**9 + k * 10**7)
        return str(tmp_path / name)

    topic = ["--topic", "/forward_position_controller/commands"]  # unstamped: receive times or --rate
    assert simreal(["bag", "check-limits", record("ok"), *topic]) == 0
    assert "0 violation(s)" in capsys.readouterr().out
    assert simreal(["bag", "check-limits", record("bad", jump_at=50), "--rate", "100", *topic]) == 1
    out = capsys.readouterr().out
    assert "panda_joint1 velocity" in out
    assert simreal(["bag", "check-limits", record("nostamped")]) == 2  # default: the shield's stamped copy
    assert "no topic /simreal/shield/sent" in capsys.readouterr().err


def test_types_unknown_to_the_typestore_come_from_installed_msg_files(tmp_path, monkeypatch):
    share = tmp_path / "share" / "demo_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "Inner.msg").write_text("float64 value\nint32 LIMIT=3\n")
    (share / "Outer.msg").write_text("# a comment\nstd_msgs/Header header\nInner[] items\nstring<=8 label\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    text, rihs = message_definition("demo_msgs/msg/Outer")
    assert "Inner[] items" in text and "MSG: demo_msgs/Inner" in text and rihs.startswith("RIHS01_")
    enc = serialize_dynamic("demo_msgs/msg/Outer", text)["demo_msgs/msg/Outer"]
    with BagWriter(tmp_path / "bag", status_interval_s=0) as w:
        w.add_topic("/outer", "demo_msgs/msg/Outer")
        w.write("/outer", enc({"header": {"stamp": {"sec": 1, "nanosec": 2}, "frame_id": "f"},
                               "items": [{"value": 1.5}], "label": "x"}), 5)
    store = get_typestore(Stores.EMPTY)  # a reader that knows the type only from the bag's own schema
    with Reader(tmp_path / "bag") as reader:
        for conn in reader.connections:
            store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        (conn, _t, raw), = list(reader.messages())
    msg = store.deserialize_cdr(raw, conn.msgtype)
    assert msg.items[0].value == 1.5 and msg.label == "x" and msg.header.stamp.nanosec == 2
