"""``simreal bag check-limits`` cannot be neutralised by its options, and reads the shield's
stamped JointState by joint name: a real violation is found whatever the names' order, none is
invented, and names that are not the robot's joints are an error naming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mcap_ros2._dynamic import serialize_dynamic
from test_bag_recover import JS, NAMES, READY, SENT, T0, TS, sent

from simreal_ros.bag import BagWriter
from simreal_ros.bag.types import message_definition
from simreal_ros.cli import main as simreal
from simreal_ros.robot import load_robot

ROBOT = load_robot("panda")
LO, HI = ROBOT.limits.position_min, ROBOT.limits.position_max
FA = "std_msgs/msg/Float64MultiArray"


def sent_bag(path: Path, n: int = 200, names=NAMES, positions=None, **kw) -> Path:
    """A bag of n stamped sent commands at 1 kHz (constant positions, given in ``names`` order)."""
    with BagWriter(path, status_interval_s=0) as w:
        w.add_topic(SENT, JS)
        for i in range(n):
            w.write(SENT, sent(i, names, READY if positions is None else positions), T0 + i * 1_000_000)
    return path


def check(capsys, bag: Path, *options: str) -> tuple[int, str, str]:
    rc = simreal(["bag", "check-limits", str(bag), *options])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.out, out.err


def violations(out: str) -> set[tuple[str, str]]:
    return {(line.split()[2], line.split()[3].rstrip(":")) for line in out.splitlines() if line.startswith("  #")}


def test_a_margin_that_would_hide_a_violation_is_refused(tmp_path, capsys):
    q = list(READY)
    q[0] = HI[0] + 0.3  # 0.3 rad past joint 1's upper limit
    bag = sent_bag(tmp_path / "past", positions=q)
    rc, out, _ = check(capsys, bag)
    assert rc == 1 and "200 violation(s)" in out and violations(out) == {("panda_joint1", "position")}
    half = float(np.min(HI - LO)) / 2  # joint 4: (3.0718 - 0.0698) / 2
    for margin in ("-1", "nan", "inf", "-inf", f"{half}", "2"):
        rc, out, err = check(capsys, bag, f"--position-margin={margin}")
        assert rc == 2 and out == "" and err.count("\n") == 1, (margin, err)
        assert "--position-margin" in err and f"finite, >= 0 and less than {half:.6g} rad" in err
    rc, out, _ = check(capsys, bag, "--position-margin", "0.1")
    assert rc == 1 and violations(out) == {("panda_joint1", "position")}


@pytest.mark.parametrize("option,value", [("--rate", "nan"), ("--rate", "inf"), ("--rate", "-100"),
                                          ("--max-report", "-1")])
def test_bad_rate_and_max_report_are_refused(tmp_path, capsys, option, value):
    rc, out, err = check(capsys, sent_bag(tmp_path / "b"), f"{option}={value}")
    assert rc == 2 and out == "" and err.count("\n") == 1 and option in err


def test_joint_names_map_the_values_onto_the_robots_joints(tmp_path, capsys):
    rotated = NAMES[1:] + NAMES[:1]  # the same joints in another order
    by_name = dict(zip(NAMES, READY))
    by_name["panda_joint4"] = HI[3] + 0.24  # a real violation: 0.24 rad past joint 4's upper limit
    bag = sent_bag(tmp_path / "rot", names=rotated, positions=[by_name[n] for n in rotated])
    rc, out, _ = check(capsys, bag, "--position-margin=0")
    # read in message order, joint 4's value would land on joint 3 (within its limits) and joint 5's 0.0 on
    # joint 4 (0.07 rad past its upper limit): one real violation hidden, one invented
    assert rc == 1 and "200 violation(s)" in out and violations(out) == {("panda_joint4", "position")}
    assert f"panda_joint4 position: {HI[3] + 0.24:.6g} (limit {HI[3]:.6g})" in out
    ok = sent_bag(tmp_path / "ok", names=rotated, positions=[dict(zip(NAMES, READY))[n] for n in rotated])
    rc, out, _ = check(capsys, ok)
    assert rc == 0 and "0 violation(s)" in out


@pytest.mark.parametrize("names,why", [
    ([f"fr3_joint{i}" for i in range(1, 8)], "missing ['panda_joint1'"),
    (NAMES[:6], "missing ['panda_joint7']"),
    (NAMES[:6] + ["panda_joint1"], "duplicate joint(s) ['panda_joint1']"),
    (NAMES + ["panda_finger_joint1"], "unknown ['panda_finger_joint1']"),
])
def test_names_that_are_not_the_robots_joints_are_an_error_naming_them(tmp_path, capsys, names, why):
    bag = sent_bag(tmp_path / "foreign", names=names, positions=[0.1] * len(names))
    rc, out, err = check(capsys, bag)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert why in err and str(list(names)) in err and "message #0" in err


def test_values_that_do_not_match_the_names_are_an_error(tmp_path, capsys):
    with BagWriter(tmp_path / "short", status_interval_s=0) as w:
        w.add_topic(SENT, JS)
        w.write(SENT, sent(0, NAMES, READY[:5]), T0)
    rc, _, err = check(capsys, tmp_path / "short")
    assert rc == 2 and "5 position value(s) for 7 joint names" in err


def test_stamped_commands_reorders_by_name():
    from simreal_ros.bag.check import stamped_commands

    names = list(reversed(NAMES))
    msgs = [(0, TS.deserialize_cdr(sent(i, names, [float(k) for k in range(7)]), JS)) for i in range(3)]
    times, rows = stamped_commands(msgs, ROBOT)
    assert np.allclose(rows, [list(reversed(range(7)))] * 3)
    assert np.allclose(times, (T0 + np.arange(3) * 1_000_000) / 1e9)
    with pytest.raises(ValueError, match="'effort'"):
        stamped_commands(msgs, ROBOT, "torque")


def test_an_unstamped_command_topic_of_the_wrong_width_is_an_error(tmp_path, capsys):
    enc = serialize_dynamic(FA, message_definition(FA)[0])[FA]
    with BagWriter(tmp_path / "fa", status_interval_s=0) as w:
        w.add_topic("/cmd", FA)
        w.write("/cmd", enc({"layout": {"dim": [], "data_offset": 0}, "data": [0.0] * 6}), T0)
    rc, _, err = check(capsys, tmp_path / "fa", "--topic", "/cmd")
    assert rc == 2 and "message #0 has 6 values, panda has 7 joints" in err


def test_the_default_margin_and_steps_are_the_recording_shields_settings(tmp_path, capsys):
    from simreal_ros.shield.config import load_shield_config

    shipped = load_shield_config()  # config/shield.yaml, read as the deployed node reads it
    assert shipped.position_margin > 0
    q = list(READY)
    q[0] = HI[0] - shipped.position_margin / 2  # inside the hard limit, not inside the shield's margin
    bag = sent_bag(tmp_path / "margin", positions=q)
    rc, out, _ = check(capsys, bag)
    assert rc == 1 and violations(out) == {("panda_joint1", "position")}
    assert f"position margin {shipped.position_margin:g} rad, step gap {shipped.max_step_gap:g} s" in out
    assert f"(limit {HI[0] - shipped.position_margin:.6g})" in out
    assert check(capsys, bag, "--position-margin=0")[0] == 0
    own = tmp_path / "shield.yaml"
    own.write_text("safety_shield:\n  ros__parameters:\n    position_margin: 0.001\n")
    assert check(capsys, bag, "--shield-config", str(own))[0] == 0
    own.write_text("safety_shield:\n  ros__parameters:\n    position_margin: -1.0\n")
    rc, out, err = check(capsys, bag, "--shield-config", str(own))
    assert rc == 2 and out == "" and err.count("\n") == 1 and "--shield-config" in err and "position_margin" in err
