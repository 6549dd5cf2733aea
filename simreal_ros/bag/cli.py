"""``simreal bag info|recover|check-limits PATH``.

``info`` opens the bag with ``rosbags`` (a reader independent of the writer) and prints
files, topics and counts, plus the recorder's counters. ``recover`` makes a crash-torn or
damaged bag readable again and prints per file what was kept, what was lost and where the
original is kept (see :mod:`simreal_ros.bag.recover`). ``check-limits`` checks the recorded
sent commands against every robot limit (see :mod:`simreal_ros.bag.check`).

Exit codes: 0 ok; 1 a limit violation (``check-limits``), a bag that needs recovery
(``info``) or a recovery whose result does not read back; 2 bad input (not a bag, bad
metadata, a damaged bag, a bad option), with one line on stderr naming the file or option.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from simreal_ros.bag.check import STAMP_RESOLUTION, STAMPED_SENT_TOPIC, BagReadError, check_bag, sent_commands
from simreal_ros.bag.recover import BagInputError, RecoveryError, needs_recovery, recover


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    p = sub.add_parser("info", help="files, topics, message counts and recorder counters of a bag")
    p.add_argument("path", type=Path, help="bag directory")
    p = sub.add_parser("recover", help="make a crash-torn or damaged bag readable again; originals are kept in "
                                       "<bag>/original/, the report says what was lost")
    p.add_argument("path", type=Path, help="bag directory")
    p = sub.add_parser("check-limits", help="check recorded sent commands against every robot limit "
                                            "(simreal_ros.shield.limits.check_limits); exit 1 on a violation")
    p.add_argument("path", type=Path, help="bag directory")
    p.add_argument("--topic", default=STAMPED_SENT_TOPIC,
                   help="the shield's stamped JointState copy (default: %(default)s; mapped by joint name), or a "
                        "Float64MultiArray command topic (robot joint order; receive times, or --rate)")
    p.add_argument("--shield-config", type=Path, default=None,
                   help="the recording shield's parameter file (default: the shipped config/shield.yaml): its "
                        "command_mode, position_margin, max_step_gap and min_step, read as the node reads them")
    p.add_argument("--mode", choices=("position", "effort"), default=None,
                   help="command mode (default: the shield config's)")
    p.add_argument("--robot", default="panda", help="robot description name (default: %(default)s)")
    p.add_argument("--position-margin", type=float, default=None,
                   help="rad inside the position limits (default: the shield config's): finite, >= 0, less than "
                        "half the smallest position range")
    p.add_argument("--rate", type=float, default=0.0,
                   help="Hz (finite, >= 0; 0: off): use nominal send times k/rate instead of the bag's receive times "
                        "(receive-time jitter inflates the differentiated velocity/acceleration/jerk)")
    p.add_argument("--max-report", type=int, default=20, help="violations to print, >= 0 (default: %(default)s)")


def _error(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 2


def info(path: Path) -> int:
    from rosbags.rosbag2 import Reader

    if not path.is_dir():
        return _error(f"{path} is not a bag directory")
    if needs_recovery(path):
        print(f"error: {path} was not closed cleanly (no metadata.yaml or an unfinished file); "
              f"run: simreal bag recover {path}", file=sys.stderr)
        return 1
    try:
        meta = check_bag(path)
        with Reader(path) as reader:
            lines = [f"bag:       {path}",
                     f"files:     {', '.join(meta.get('relative_file_paths', []))}",
                     f"duration:  {reader.duration / 1e9:.3f} s",
                     f"messages:  {reader.message_count}"]
            width = max((len(c.topic) for c in reader.connections), default=0)
            lines += [f"  {c.topic:<{width}}  {c.msgcount:>9}  {c.msgtype}"
                      for c in sorted(reader.connections, key=lambda c: c.topic)]
    except BagReadError as exc:
        return _error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a damaged bag fails in many ways; name it and say what to do
        return _error(f"{path} does not read back ({type(exc).__name__}: {exc}); run: simreal bag recover {path}")
    print("\n".join(lines))
    counters = {k: v for k, v in meta["custom_data"].items() if k.startswith("simreal.")}
    if counters:
        print("recorder counters:")
        for k, v in counters.items():
            print(f"  {k[len('simreal.'):]}: {v}")
    return 0


def _options_error(args: argparse.Namespace, robot) -> str | None:
    rng = robot.limits.position_max - robot.limits.position_min
    half = float(rng.min()) / 2
    m = args.position_margin
    if not (math.isfinite(m) and 0 <= m < half):
        return (f"--position-margin {m!r}: must be finite, >= 0 and less than {half:.6g} rad (half the smallest "
                f"position range of {robot.name}, joint {robot.joint_names[int(rng.argmin())]})")
    if not (math.isfinite(args.rate) and args.rate >= 0):
        return f"--rate {args.rate!r}: must be finite and >= 0 (Hz; 0: use the bag's times)"
    if args.max_report < 0:
        return f"--max-report {args.max_report}: must be >= 0"
    return None


def check_limits_cmd(args: argparse.Namespace) -> int:
    """The recorded commands against the robot's limits, with the recording shield's settings
    (margin, step gap, min step, mode: the same loader as the deployed node) unless overridden."""
    from simreal_ros.robot import load_robot
    from simreal_ros.shield.config import load_shield_config
    from simreal_ros.shield.limits import check_limits

    try:
        robot = load_robot(args.robot)
    except (ValueError, OSError) as exc:
        return _error(f"--robot {args.robot!r}: {exc}")
    try:
        shield = load_shield_config(args.shield_config)
    except (ValueError, OSError) as exc:
        return _error(f"--shield-config: {exc}")
    args.mode = args.mode or shield.command_mode
    args.position_margin = shield.position_margin if args.position_margin is None else args.position_margin
    why = _options_error(args, robot)
    if why:
        return _error(why)
    try:
        times, commands, clock = sent_commands(args.path, args.topic, args.mode, args.rate, robot=robot)
    except ValueError as exc:
        return _error(str(exc))
    violations = check_limits(robot, times, commands, command_mode=args.mode, position_margin=args.position_margin,
                              max_step_gap=shield.max_step_gap, min_step=shield.min_step,
                              time_resolution=0.0 if args.rate > 0 else STAMP_RESOLUTION)  # stamps: integer ns
    print(f"{len(commands)} commands on {args.topic} (times: {clock}; {args.mode} mode, position margin "
          f"{args.position_margin:g} rad, step gap {shield.max_step_gap:g} s): {len(violations)} violation(s)")
    for v in violations[:args.max_report]:
        print(f"  #{v.index} t={v.time:.4f} {v.joint} {v.kind}: {v.value:.6g} (limit {v.limit:.6g})")
    return 1 if violations else 0


def recover_cmd(path: Path) -> int:
    try:
        report = recover(path)
    except BagInputError as exc:
        return _error(str(exc))
    except RecoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _error(f"{path}: {exc.strerror or exc} ({exc.filename or path}); originals are kept unchanged")
    print(report.summary())
    return 0


def run(args: argparse.Namespace) -> int:
    if args.bag_command == "info":
        return info(args.path)
    if args.bag_command == "check-limits":
        return check_limits_cmd(args)
    return recover_cmd(args.path)
