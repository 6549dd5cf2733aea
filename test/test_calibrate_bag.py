"""Bags -> calibration sessions: real rosbag2 (MCAP) bags written by the package's writer, read
back with rosbags; the joint states mapped by name, the shield's stamps kept, gaps split, and
every bad bag one line naming what is wrong (the CLI exits 2 on it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2._dynamic import serialize_dynamic

from simreal_ros.bag import BagWriter
from simreal_ros.bag.types import message_definition
from simreal_ros.calibrate.bag import BagInputError, ReadOptions, read_bag, read_bags
from simreal_ros.cli import main as simreal
from simreal_ros.robot import load_robot

ROBOT = load_robot()
NAMES = list(ROBOT.joint_names)
JS, FA, DA = "sensor_msgs/msg/JointState", "std_msgs/msg/Float64MultiArray", "diagnostic_msgs/msg/DiagnosticArray"
ENC = {t: serialize_dynamic(t, message_definition(t)[0])[t] for t in (JS, FA, DA)}
T0 = 1_796_000_000 * 10**9 + 123_456_789  # ns: ROS time of the first state
STATE, SENT = "/joint_states", "/simreal/shield/sent"


def _stamp(ns: int) -> dict:
    return {"sec": ns // 10**9, "nanosec": ns % 10**9}


def q_at(t: float) -> np.ndarray:
    return ROBOT.ready_pose + 0.2 * np.sin(np.arange(1, 8) * 0.7 * t)


def js(ns: int, names, q, dq=None, tau=None) -> bytes:
    order = [NAMES.index(n) if n in NAMES else 0 for n in names]
    pick = (lambda v: [float(v[i]) for i in order]) if len(names) == len(NAMES) else (lambda v: list(v[:len(names)]))
    return ENC[JS]({"header": {"stamp": _stamp(ns), "frame_id": ""}, "name": list(names), "position": pick(q),
                    "velocity": [] if dq is None else pick(dq), "effort": [] if tau is None else pick(tau)})


def write_bag(path: Path, seconds: float = 6.0, state_hz: float = 250.0, cmd_hz: float = 50.0,
              names=None, gap: tuple[float, float] | None = None, sent_offset_ns: int = 0, sent=True,
              effort_mode=False, controller="excitation", state_topic=STATE, extra=()) -> Path:
    """A recording like the calibrate graph's: states with reversed joint names, the shield's
    stamped sent commands, the controller's proposals (and the shield's source on /diagnostics)."""
    names = list(reversed(NAMES)) if names is None else names
    with BagWriter(path, status_interval_s=0) as w:
        w.add_topic(state_topic, JS)
        if sent:
            w.add_topic(SENT, JS)
        topic = {"excitation": "/simreal/excitation/command", "policy": "/simreal/policy/command",
                 "baseline": "/simreal/baseline/command"}[controller]
        w.add_topic(topic, FA)
        w.add_topic("/diagnostics", DA)
        for name, kind, raw, t in extra:
            w.add_topic(name, kind)
            w.write(name, raw, t)
        events = []
        for k in range(int(seconds * state_hz)):
            t = k / state_hz
            if gap and gap[0] <= t < gap[1]:
                continue
            ns = T0 + round(t * 1e9)
            q = q_at(t)
            events.append((ns + 2_000_000, state_topic, js(ns, names, q, np.cos(t) * np.ones(7), 0.1 * q)))
        for k in range(int(seconds * cmd_hz)):
            t = k / cmd_hz
            ns = T0 + round(t * 1e9) + 300_000
            cmd = q_at(t + 0.02)
            if sent:
                stamp = ns + sent_offset_ns
                raw = ENC[JS]({"header": {"stamp": _stamp(stamp), "frame_id": ""}, "name": NAMES,
                               "position": [] if effort_mode else cmd.tolist(), "velocity": [],
                               "effort": cmd.tolist() if effort_mode else []})
                events.append((ns + 500_000, SENT, raw))
            events.append((ns, topic, ENC[FA]({"layout": {"dim": [{"label": "position", "size": 7, "stride": 7}],
                                                          "data_offset": 0}, "data": cmd.tolist()})))
            if k % 25 == 0:
                source = "policy" if controller == "excitation" else controller
                events.append((ns, "/diagnostics", ENC[DA]({"header": {"stamp": _stamp(ns), "frame_id": ""}, "status": [
                    {"level": 0, "name": "safety_shield", "message": "forwarding", "hardware_id": "panda",
                     "values": [{"key": "source", "value": source}]}]})))
        for ns, name, raw in sorted(events, key=lambda e: e[0]):
            w.write(name, raw, ns)
    return path


def test_a_recording_gives_one_session_in_robot_order_on_its_own_stamps(tmp_path):
    bag = write_bag(tmp_path / "rec")
    got = read_bag(bag)
    assert len(got.sessions) == 1 and got.controller == "excitation" and got.notes == []
    s = got.sessions[0]
    assert s.joint_names == tuple(NAMES) and s.source.controller == "excitation" and s.source.epoch_ns == T0
    assert s.source.sha256 == got.sha256 and len(got.sha256) == 64 and s.source.name == "rec"
    # the states by name, on their acquisition stamps relative to the first; the recorder's times beside
    np.testing.assert_allclose(s.q, np.array([q_at(t) for t in s.state_t]), atol=1e-12)
    # (the session starts with the first sent command, 0.3 ms after the first state)
    np.testing.assert_allclose(s.state_t[:3], [0.004, 0.008, 0.012], atol=1e-12)
    np.testing.assert_allclose(s.state_recv_t - s.state_t, 0.002, atol=1e-9)
    np.testing.assert_allclose(s.tau, 0.1 * s.q)
    # the sent commands on the shield's stamps, at sub-microsecond precision (0.3 ms after the states)
    np.testing.assert_allclose(s.cmd_t[:2], [0.0003, 0.0203], atol=1e-9)
    np.testing.assert_allclose(s.cmd, np.array([q_at(t - 0.0003 + 0.02) for t in s.cmd_t]), atol=1e-12)
    # and when the recorder got each (0.5 ms after the stamp): how far behind the recorder itself ran
    np.testing.assert_allclose(s.cmd_recv_t - s.cmd_t, 0.0005, atol=1e-9)
    assert s.source.duration_s == pytest.approx(s.duration, abs=0.005)


def test_gaps_split_the_bag_and_short_parts_are_dropped_with_a_note(tmp_path):
    bag = write_bag(tmp_path / "gap", seconds=12.0, gap=(4.0, 4.5))
    got = read_bag(bag)
    assert [s.source.name for s in got.sessions] == ["gap#1", "gap#2"]
    assert got.sessions[0].state_t[-1] < 4.0 <= 4.5 <= got.sessions[1].state_t[0]
    assert any("1 gap(s) longer than 0.05 s between joint states" in n for n in got.notes)
    # the command holding at a session's start is part of it
    s2 = got.sessions[1]
    assert s2.cmd_t[0] <= s2.state_t[0]
    short = read_bag(bag, options=ReadOptions(min_duration=5.0))
    assert len(short.sessions) == 1 and any("shorter than 5 s dropped" in n for n in short.notes)


def test_policy_and_baseline_sessions_are_accepted_and_named(tmp_path):
    assert read_bag(write_bag(tmp_path / "p", controller="policy")).controller == "policy"
    assert read_bag(write_bag(tmp_path / "b", controller="baseline")).controller == "baseline"


def _corrupt_truncated(bag: Path) -> None:
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[:-200])


def _corrupt_metadata(bag: Path) -> None:
    (bag / "metadata.yaml").unlink()


BAD = [
    ("no sent commands", dict(sent=False), "no sent commands on /simreal/shield/sent"),
    ("no joint states", dict(state_topic="/other_states"), "no joint states on /joint_states"),
    ("too short", dict(seconds=2.0), "too short: the longest continuous part .* is 1.9[0-9] s .at least 3 s"),
    ("all gaps", dict(seconds=6.0, gap=(1.0, 3.5)), "too short: .*1 gap.s. longer than 0.05 s"),
    ("another robot", dict(names=[f"fr3_joint{i}" for i in range(1, 8)]),
     r"joint names \['fr3_joint1', .* are not the joints of panda .*recorded on another robot"),
    ("missing joint", dict(names=NAMES[:6]), r"missing \['panda_joint7'\]"),
    ("steady clock", dict(sent_offset_ns=-1_700_000_000 * 10**9), "stamped on different clocks"),
    ("effort mode", dict(effort_mode=True), "the shield sent torques .effort mode."),
]


@pytest.mark.parametrize("case,kwargs,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_bag_is_one_line_naming_it_and_the_cli_exits_2(tmp_path, capsys, case, kwargs, message):
    bag = write_bag(tmp_path / "bad", **kwargs)
    with pytest.raises(BagInputError, match=message) as info:
        read_bag(bag)
    assert "\n" not in str(info.value) and str(bag) in str(info.value)
    rc = simreal(["calibrate", "fit", str(bag), "--out", str(tmp_path / "out"), "--read-only"])
    out = capsys.readouterr()
    assert rc == 2 and out.err.count("\n") == 1 and out.err.startswith("error: ") and "Traceback" not in out.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage,message", [(_corrupt_truncated, "not closed cleanly .* run: simreal bag recover"),
                                            (_corrupt_metadata, "metadata.yaml: missing .*run: simreal bag recover")])
def test_a_damaged_bag_says_to_recover_it(tmp_path, damage, message):
    bag = write_bag(tmp_path / "dmg")
    damage(bag)
    with pytest.raises(BagInputError, match=message):
        read_bag(bag)


def test_a_foreign_bag_or_a_plain_directory_is_named(tmp_path):
    with BagWriter(tmp_path / "chatter", status_interval_s=0) as w:
        w.add_topic("/chatter", FA)
        w.write("/chatter", ENC[FA]({"layout": {"dim": [], "data_offset": 0}, "data": [1.0]}), T0)
    with pytest.raises(BagInputError, match=r"not a recording of this stack: .*it has \['/chatter'"):
        read_bag(tmp_path / "chatter")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BagInputError, match="metadata.yaml: missing"):
        read_bag(tmp_path / "plain")
    with pytest.raises(BagInputError, match="not a bag directory"):
        read_bag(tmp_path / "nothing")


def test_the_same_recording_twice_is_refused_and_the_hash_is_the_content(tmp_path):
    a = write_bag(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert read_bag(a).sha256 == read_bag(b).sha256
    with pytest.raises(BagInputError, match="the same recording as"):
        read_bags([a, b])
    c = write_bag(tmp_path / "c", seconds=6.5)
    assert len(read_bags([a, c])) == 2


def test_the_cli_describes_what_each_session_can_identify(tmp_path, capsys):
    bag = write_bag(tmp_path / "rec")
    rc = simreal(["calibrate", "fit", str(bag), "--out", str(tmp_path / "out"), "--read-only"])
    out = capsys.readouterr().out
    assert rc == 0 and "rec: excitation session, 6.0 s, 1495 joint states, 300 sent commands" in out
    still = write_bag(tmp_path / "still", controller="baseline")  # joints 1-7 move: nothing said to be still
    assert simreal(["calibrate", "fit", str(still), "--out", str(tmp_path / "o2"), "--read-only"]) == 0
    assert "barely moved" not in capsys.readouterr().out


def test_an_empty_bag_is_named_as_empty(tmp_path, capsys):
    with BagWriter(tmp_path / "empty", status_interval_s=0) as w:
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    with pytest.raises(BagInputError, match=r"empty bag \(no messages on any of its 1 topics\)"):
        read_bag(tmp_path / "empty")
    rc = simreal(["calibrate", "fit", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "empty bag" in err and str(tmp_path / "empty") in err
    assert not (tmp_path / "out").exists()
