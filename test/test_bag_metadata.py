"""A bad metadata.yaml gives one clear error line and exit 2 from ``bag info`` and ``bag
check-limits``, never a traceback; ``bag recover`` rebuilds it from the .mcap files and keeps the
bad one in ``<bag>/original/``. Hostile YAML is never executed and never expanded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader
from test_bag_recover import GOAL, JS, PT, SENT, T0, goal, sent

from simreal_ros.bag import BagWriter
from simreal_ros.cli import main as simreal


def alias_bomb(where: str) -> str:
    """A billion-laughs document (9 levels of 10 references: 10^9 strings if expanded)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, 9)]
    body = {"custom": "{custom_data: {bomb: *l8}}", "files": "{relative_file_paths: *l8}",
            "top": "*l8"}[where]
    return "\n".join(lines) + f"\nrosbag2_bagfile_information: {body}\n"


CASES = {
    "invalid YAML": ("rosbag2_bagfile_information: {version: 9, files: [unclosed\n", "invalid YAML at line"),
    "python tag": ("!!python/object/apply:os.system ['touch {marker}']\n", "not plain YAML"),
    "a list": ("- rosbag2_bagfile_information\n- 9\n", "expected a mapping"),
    "an int": ("42\n", "expected a mapping with key rosbag2_bagfile_information, got an integer"),
    "empty": ("", "got nothing"),
    "alias bomb in custom_data": (alias_bomb("custom"), "custom_data entry 'bomb'"),
    "alias bomb as the file list": (alias_bomb("files"), "relative_file_paths must be a list of file names"),
    "alias bomb as the whole": (alias_bomb("top"), "rosbag2_bagfile_information must be a mapping, got a list"),
    "too large": ("#" * (5 * 1024 * 1024), "more than the"),  # a few MiB is the bound
    "not UTF-8": (b"\xff\xfe\x00r\x00o\x00s", "not UTF-8"),
    "a path outside the bag": ("rosbag2_bagfile_information: {relative_file_paths: [../../etc/passwd]}\n",
                               "not a file name inside the bag"),
    "topics of the wrong shape": ("rosbag2_bagfile_information: {topics_with_message_count: [5]}\n",
                                  "topics_with_message_count[0]"),
    "a directory": (None, "is a directory"),
}


def clean_bag(path: Path) -> Counter:
    with BagWriter(path, status_interval_s=0) as w:
        w.add_topic(SENT, JS)
        w.add_topic(GOAL, PT)
        for i in range(300):
            w.write(SENT, sent(i), T0 + i * 1_000_000)
            if i % 50 == 0:
                w.write(GOAL, goal(i), T0 + i * 1_000_000 + 500)
    return Counter({SENT: 300, GOAL: 6})


def spoil(bag: Path, case: str) -> bytes | None:
    text, _ = CASES[case]
    meta = bag / "metadata.yaml"
    meta.unlink()
    if text is None:
        meta.mkdir()
        (meta / "inside").write_text("keep me")
        return None
    data = text if isinstance(text, bytes) else text.replace("{marker}", str(bag / "MARKER")).encode()
    meta.write_bytes(data)
    return data


def one_error_line(capsys, *needles: str) -> None:
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert out.err.count("\n") == 1 and out.err.startswith("error: "), out.err
    for needle in needles:
        assert needle in out.err, (needle, out.err)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_metadata_is_one_clear_error_and_recover_rebuilds_it_keeping_the_original(tmp_path, capsys, case):
    bag = tmp_path / "bag"
    counts = clean_bag(bag)
    bad = spoil(bag, case)
    why = CASES[case][1]
    for action in (["info"], ["check-limits"]):
        assert simreal(["bag", *action, str(bag)]) == 2, action
        one_error_line(capsys, str(bag / "metadata.yaml"), why, "simreal bag recover")
    assert simreal(["bag", "recover", str(bag)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "metadata.yaml: rewritten" in out.out and why in out.out
    with Reader(bag) as reader:  # rebuilt from the files: every message is there
        assert Counter(c.topic for c, _t, _r in reader.messages()) == counts
    kept = bag / "original" / "metadata.yaml"
    if bad is None:
        assert (kept / "inside").read_text() == "keep me"
    else:
        assert kept.read_bytes() == bad
    assert not (bag / "MARKER").exists()  # the python tag was never executed
    assert simreal(["bag", "check-limits", str(bag)]) == 0
    assert simreal(["bag", "info", str(bag)]) == 0


@pytest.mark.timeout(60)
def test_metadata_that_is_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    import os

    bag = tmp_path / "bag"
    clean_bag(bag)
    (bag / "metadata.yaml").unlink()
    os.mkfifo(bag / "metadata.yaml")  # reading it would block forever
    assert simreal(["bag", "info", str(bag)]) == 2
    one_error_line(capsys, "is not a regular file")
