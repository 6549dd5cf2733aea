"""``simreal sim``: the whole stack in simulation, with the shipped policy, recorded to a bag.

Runs the same node graph as ``ros2 launch simreal_ros bringup.launch.py mode:=sim`` on a
machine with only the pip-installed ROS wheels, sequences N goals, shows live progress and
ends with a summary. Exit code: 0 when every check passed, 1 on any limit violation found in
the recorded sent commands, 2 when the graph could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from simreal_ros.bringup.graph import LAUNCH_ARGS, GraphOptions, build_graph, view_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for arg in LAUNCH_ARGS:
        if arg.name in ("mode", "real_driver_config"):
            continue
        flag = "--" + arg.name.replace("_", "-")
        kwargs = {"default": arg.default, "help": arg.description}
        if arg.choices:
            kwargs["choices"] = list(arg.choices)
        if arg.choices == ("true", "false"):  # `--view` alone means `--view true`
            kwargs.update(nargs="?", const="true", metavar="true|false")
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--goals", type=int, default=5, help="number of goals to reach (default 5)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds even if goals remain (0: no limit)")
    parser.add_argument("--goal-timeout", type=float, default=10.0, help="seconds allowed per goal")
    parser.add_argument("--in-process", action="store_true",
                        help="compose every node in this one process on one executor (default: a process per "
                             "node, which uses every core; one Python thread cannot keep a 500 Hz sim, the "
                             "estimator and the recorder up to rate on a loaded laptop)")
    parser.add_argument("--compose-hot-path", action="store_true",
                        help="run the estimator, the policy and the shield composed in one process (the other nodes "
                             "in their own): no transport between processes on the state-to-command path")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    # Keep DDS on this machine unless the user chose otherwise (must happen before rclpy loads).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.goals < 1:
        print("error: --goals must be >= 1", file=sys.stderr)
        return 2
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    values = {a.name: str(getattr(args, a.name)) for a in LAUNCH_ARGS if a.name not in ("mode", "real_driver_config")}
    try:
        opts = GraphOptions.from_strings({**values, "mode": "sim", "bag_name": f"sim_{stamp}"})
        nodes = build_graph(opts)  # reads the policy manifest and checks the shield's settings
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(opts.output_dir).resolve() / f"sim_{stamp}_logs"
    for spec in nodes:
        if spec.name == "live_view":  # where to point Foxglove (the node logs the same)
            view = view_config(spec)
            print(f"live view: ws://{view.host}:{view.port} (Foxglove: open connection; layout: "
                  "config/foxglove_layout.json)")

    from simreal_ros.bringup.session import run_session

    summary = run_session(nodes, opts, run_dir, goals=args.goals, duration=args.duration,
                          goal_timeout=args.goal_timeout, processes=not args.in_process,
                          compose_hot_path=args.compose_hot_path,
                          progress=not args.no_progress)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if summary.get("error"):
        return 2
    return 1 if summary["limit_violations"] else 0


def print_summary(s: dict) -> None:
    print("\n=== simreal sim: summary ===")
    print(f"goals reached        {s['goals_reached']}/{s['goals_attempted']} "
          f"({100.0 * s['success_rate']:.0f}%), mean time {s['mean_time_to_goal_s']:.2f} s")
    print(f"shield interventions {s['interventions']} over {s['sent_commands']} sent commands")
    lat = s.get("policy_latency_p99_ms")
    print(f"policy latency p99   {'n/a' if lat is None else f'{lat:.3f} ms'} (compute)")
    age, skipped, cycles = s.get("policy_state_age_p99_ms"), s.get("policy_skipped_cycles"), s.get("policy_cycles")
    print(f"policy state age p99 {'n/a' if age is None else f'{age:.1f} ms'} (measurement stamp -> policy cycle)")
    print(f"policy cycles skipped {'n/a' if not cycles else f'{skipped} of {cycles} ({100.0 * skipped / cycles:.1f}%)'}"
          " after start-up" + (f" ({', '.join(f'{r} {n}' for r, n in s['policy_skipped_by_reason'].items())})"
                               if s.get("policy_skipped_by_reason") else ""))
    holds = s.get("shield_command_timeouts")
    print(f"shield holds         {'n/a' if holds is None else holds} for lack of a fresh command after start-up")
    print(f"limit violations     {s['limit_violations']} (recorded sent commands checked against the limits)")
    print(f"bag                  {s.get('bag') or 'not recorded'}")
    if s.get("error"):
        print(f"ERROR                {s['error']}")
    print(f"logs                 {s['run_dir']}")
