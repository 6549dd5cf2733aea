"""``simreal bag info PATH`` and ``simreal bag recover PATH``.

``info`` opens the bag with ``rosbags`` (a reader independent of the writer) and prints
files, topics and counts, plus the recorder's counters. ``recover`` makes a bag whose
recorder was killed readable again (see :mod:`simreal_ros.bag.recover`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simreal_ros.bag.metadata import read_metadata
from simreal_ros.bag.recover import needs_recovery, recover


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    p = sub.add_parser("info", help="files, topics, message counts and recorder counters of a bag")
    p.add_argument("path", type=Path, help="bag directory")
    p = sub.add_parser("recover", help="rebuild metadata.yaml (and a torn last chunk) after a crash")
    p.add_argument("path", type=Path, help="bag directory")


def info(path: Path) -> int:
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    if not path.is_dir():
        print(f"error: {path} is not a bag directory", file=sys.stderr)
        return 2
    if needs_recovery(path):
        print(f"error: {path} was not closed cleanly (no metadata.yaml or an unfinished file); "
              f"run: simreal bag recover {path}", file=sys.stderr)
        return 1
    meta = read_metadata(path)
    custom = meta.get("custom_data") or {}
    try:
        with Reader(path) as reader:
            print(f"bag:       {path}")
            print(f"files:     {', '.join(meta.get('relative_file_paths', []))}")
            print(f"duration:  {reader.duration / 1e9:.3f} s")
            print(f"messages:  {reader.message_count}")
            width = max((len(c.topic) for c in reader.connections), default=0)
            for c in sorted(reader.connections, key=lambda c: c.topic):
                print(f"  {c.topic:<{width}}  {c.msgcount:>9}  {c.msgtype}")
    except ReaderError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    counters = {k: v for k, v in custom.items() if k.startswith("simreal.")}
    if counters:
        print("recorder counters:")
        for k, v in counters.items():
            print(f"  {k[len('simreal.'):]}: {v}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.bag_command == "info":
        return info(args.path)
    try:
        report = recover(args.path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
