"""``simreal calibrate record|fit``: record an identification session in simulation, fit the
simulator to recorded bags.

``record`` runs the calibrate graph (``calibrate.launch.py mode:=sim``: the excitation
controller through the shield, every node in its own process) and writes one bag to ``--out``;
``--real-arm FILE`` gives the sim bridge a hidden "real" arm (simreal_ros/sim/real_arm.py).
``fit`` reads the bags (:mod:`simreal_ros.calibrate.bag`: measured joint states and the
shield's sent commands; excitation, policy or baseline sessions), says per session what drove
the arm and which joints moved, and runs the ``mujoco.sysid`` fitter
(:mod:`simreal_ros.calibrate.fit`), writing ``calibration.yaml`` and the report into ``--out``.
Bags of push sessions (tracked puck poses on ``/simreal/object_pose``) also give the contact:
puck-table friction and puck mass (:mod:`simreal_ros.calibrate.contact`, ``--contact``).

Exit codes: 0 done; 1 ``record``: a recorded sent command violates a limit; 2 bad input (an
option, a bag that gives no session: one line on stderr naming it) or a graph that did not run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros.bringup.graph import CALIBRATE_ARGS, GraphOptions, build_calibrate_graph

_ARG = {a.name: a for a in CALIBRATE_ARGS}
#: a joint whose peak speed stays below this in a session tells little about its friction/damping
MOVING_SPEED = 0.05  # rad/s
CONTACT_CHOICES = ("auto", "on", "only", "off")


def _fit_module():
    """(fit, FitConfig, write_outputs) of the mujoco.sysid fitter, or None when not installed."""
    try:
        fit_mod = importlib.import_module("simreal_ros.calibrate.fit")
        out_mod = importlib.import_module("simreal_ros.calibrate.outputs")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(("simreal_ros.calibrate", "mujoco.sysid", "scipy")):
            return None
        raise
    return fit_mod.fit, fit_mod.FitConfig, out_mod.write_outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="calibrate_command", metavar="ACTION", required=True)
    p = sub.add_parser("record", help="record an excitation session in simulation (the calibrate graph) to a bag")
    p.add_argument("--out", type=Path, required=True, help="bag directory to write (must not exist)")
    p.add_argument("--duration", type=float, default=float(_ARG["duration"].default),
                   help=f"{_ARG['duration'].description} (default: %(default)s)")
    p.add_argument("--randomization", default=_ARG["randomization"].default,
                   help=f"{_ARG['randomization'].description} (default: %(default)s)")
    p.add_argument("--real-arm", default="", help=_ARG["real_arm"].description)
    p.add_argument("--seed", type=int, default=int(_ARG["seed"].default), help=_ARG["seed"].description)
    p.add_argument("--timing", choices=list(_ARG["timing"].choices), default=_ARG["timing"].default,
                   help=_ARG["timing"].description)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p = sub.add_parser("fit", help="fit the simulator (mujoco.sysid) to recorded bags; write calibration.yaml")
    p.add_argument("bags", nargs="+", type=Path, help="bag directories (simreal calibrate record, simreal sim, "
                                                      "a robot run)")
    p.add_argument("--out", type=Path, required=True, help="output directory (calibration.yaml, report)")
    p.add_argument("--state-topic", default="", help="the driver's JointState topic (default: /joint_states, "
                                                     "else config/real_driver.yaml's)")
    p.add_argument("--max-gap", type=float, default=0.05, help="s between joint states that ends a session "
                                                               "(default: %(default)s)")
    p.add_argument("--min-duration", type=float, default=3.0, help="s: shorter continuous parts are dropped "
                                                                   "(default: %(default)s)")
    p.add_argument("--read-only", action="store_true", help="read and describe the sessions, do not fit")
    p.add_argument("--contact", choices=CONTACT_CHOICES, default="auto",
                   help="the push task's contact (puck-table friction, puck mass) from the tracked puck poses: auto = "
                        "from the bags that have them; on = every bag must; only = contact only, not the arm; off "
                        "(default: %(default)s)")
    from simreal_ros.scale import add_ray_argument

    add_ray_argument(p, "the fit's rollouts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    found = _fit_module()
    if found is not None:  # the fitter's settings, declared once in its FitConfig
        from simreal_ros.settings import settings_of

        for s in settings_of(found[1]):
            flag = "--" + s.name.replace("_", "-")
            kw: dict[str, Any] = {"dest": f"fit_{s.name}", "default": None, "help": s.doc()}
            if s.kind is list:
                kw["nargs"] = "+"
            elif s.kind is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = s.kind
            p.add_argument(flag, **kw)


def _error(text: str) -> int:
    print(f"error: {text}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    return record(args) if args.calibrate_command == "record" else fit(args)


# ---------------------------------------------------------------------------------- record
def record(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy loads
    bag = args.out.expanduser().resolve()
    if bag.exists():
        return _error(f"--out {args.out}: already exists (a recording is never overwritten)")
    values = {"mode": "sim", "duration": str(args.duration), "randomization": args.randomization,
              "real_arm": args.real_arm, "seed": str(args.seed), "timing": args.timing,
              "output_dir": str(bag.parent), "bag_name": bag.name}
    try:
        opts = GraphOptions.from_strings(values)
        if not opts.duration > 0:
            raise ValueError(f"--duration {args.duration:g}: a recording needs a duration > 0 s")
        nodes = build_calibrate_graph(opts)
    except ValueError as exc:
        return _error(str(exc))
    from simreal_ros.bringup.calibrate_session import record_session

    summary = record_session(nodes, opts, bag, bag.parent / f"{bag.name}_logs", progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print("\n=== simreal calibrate record ===")
        if summary.get("bag_messages"):
            counts = summary["bag_messages"]
            print(f"bag                  {summary['bag']}")
            print(f"messages             {sum(counts.values())}: " + ", ".join(
                f"{t} {counts[t]}" for t in ("/joint_states", "/simreal/shield/sent", "/simreal/excitation/command")
                if t in counts))
            print(f"limit violations     {summary['limit_violations']} (recorded sent commands checked)")
            print(f"next                 simreal calibrate fit {summary['bag']} --out <dir>")
        if summary.get("error"):
            print(f"ERROR                {summary['error']}")
        print(f"logs                 {summary['logs']}")
    if summary.get("error"):
        return 2
    return 1 if summary.get("limit_violations") else 0


# ---------------------------------------------------------------------------------- fit
def describe(read) -> list[dict[str, Any]]:
    """Per session: what drove the arm, its span and counts, and which joints moved (what an
    ordinary task session can tell about each joint's friction and damping)."""
    out = []
    for r in read:
        for s in r.sessions:
            peak = np.max(np.abs(s.dq), axis=0)
            still = [n for n, v in zip(s.joint_names, peak) if v < MOVING_SPEED]
            out.append({"bag": str(r.bag), "session": s.source.name, "controller": s.source.controller,
                        "duration_s": round(s.duration, 3), "states": len(s.state_t), "commands": len(s.cmd_t),
                        "efforts": s.tau is not None, "peak_speed_rad_s": np.round(peak, 3).tolist(),
                        "still_joints": still, "sha256": s.source.sha256, "notes": list(r.notes)})
    return out


def _print_sessions(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(f"{row['session']}: {row['controller']} session, {row['duration_s']:.1f} s, {row['states']} joint "
              f"states, {row['commands']} sent commands{'' if row['efforts'] else ', no efforts'}")
        if row["still_joints"]:
            print(f"  barely moved (peak speed < {MOVING_SPEED:g} rad/s): {', '.join(row['still_joints'])}: their "
                  "friction, damping and armature cannot be identified from this session")
    for note in dict.fromkeys(n for row in rows for n in [f"{row['bag']}: {x}" for x in row["notes"]]):
        print(f"  note: {note}")


def _contact_logs(args: argparse.Namespace) -> list:
    """The push logs of the bags (``--contact``); ContactInputError names a bag that has none
    when they are required."""
    from simreal_ros.calibrate.contact_log import OBJECT_TOPIC, ContactInputError, read_push_bag

    mode = getattr(args, "contact", "auto")
    if mode == "off":
        return []
    logs = []
    for bag in args.bags:
        try:
            logs.append(read_push_bag(bag))
        except ContactInputError as exc:
            if mode != "auto" or OBJECT_TOPIC not in str(exc):
                raise
    return logs


def _fit_contact(args: argparse.Namespace, logs: list) -> Any:
    from simreal_ros.calibrate.contact import fit_contact

    cc = fit_contact(logs)
    print(f"contact: {cc.stats['pushes']} pushes in {', '.join(x.name for x in logs)} ({cc.stats['contact_s']:.1f} s "
          f"in contact, {cc.stats['free_slide_s']:.1f} s sliding free); puck path RMSE {cc.rmse_before * 1e3:.1f} mm "
          f"(prior) -> {cc.rmse_after * 1e3:.1f} mm", file=sys.stderr if args.json else sys.stdout)
    return cc


def _print_contact(cc: Any) -> None:
    for e in cc.estimates.values():
        if e.identified:
            print(f"  {e.name:28s} {_fmt(e.value)} +- {_fmt(e.std)} {e.unit} (prior {_fmt(e.prior)})")
        else:
            print(f"  not identified: {e.name}: {e.reason}")


def fit(args: argparse.Namespace) -> int:
    from simreal_ros.calibrate.bag import ReadOptions, read_bags, sessions_of
    from simreal_ros.calibrate.contact_log import ContactInputError
    from simreal_ros.calibrate.session import SessionError
    from simreal_ros.scale import RayUnavailableError

    if getattr(args, "contact", "auto") == "only":
        try:
            logs = _contact_logs(args)
        except ContactInputError as exc:
            return _error(str(exc))
        if args.read_only:
            return 0
        cc = _fit_contact(args, logs)
        from simreal_ros.calibrate.outputs import write_outputs

        paths = write_outputs(None, args.out, contact=cc)
        summary = {"contact": {k: e.as_dict() for k, e in cc.estimates.items()},
                   "outputs": {k: str(v) for k, v in paths.items()}, "warnings": list(cc.warnings)}
        if args.json:
            print(json.dumps(summary, indent=2, default=float))
        else:
            _print_contact(cc)
            for k, v in paths.items():
                print(f"{k:12s} {v}")
        return 0
    try:
        contact_logs = _contact_logs(args)
    except ContactInputError as exc:
        return _error(str(exc))
    try:
        options = ReadOptions(state_topic=args.state_topic, max_gap=args.max_gap, min_duration=args.min_duration)
        read = read_bags(args.bags, options=options)
    except (SessionError, ValueError) as exc:
        return _error(str(exc))
    rows = describe(read)
    summary: dict[str, Any] = {"sessions": rows}
    if not args.json:
        _print_sessions(rows)
    if args.read_only:
        if args.json:
            print(json.dumps(summary, indent=2))
        return 0
    found = _fit_module()
    if found is None:
        return _error("the fitter (simreal_ros.calibrate.fit, the 'calibrate' extra: mujoco[sysid]) is not "
                      "installed; --read-only describes the sessions")
    fit_fn, fit_config, write_outputs = found
    from simreal_ros.settings import settings_of

    overrides = {s.name: getattr(args, f"fit_{s.name}") for s in settings_of(fit_config)
                 if getattr(args, f"fit_{s.name}", None) is not None}
    try:
        config = fit_config(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
        cal = fit_fn(sessions_of(read), config, progress=not args.no_progress, ray=args.ray)
    except (SessionError, ValueError, RayUnavailableError) as exc:
        return _error(str(exc))
    cc = _fit_contact(args, contact_logs) if contact_logs else None
    paths = write_outputs(cal, args.out, contact=cc) if cc is not None else write_outputs(cal, args.out)
    summary["outputs"] = {k: str(v) for k, v in paths.items()}
    summary["warnings"] = list(cal.warnings) + (list(cc.warnings) if cc is not None else [])
    summary["estimates"] = {k: e.as_dict() for k, e in cal.estimates.items()}
    if cc is not None:
        summary["contact"] = {k: e.as_dict() for k, e in cc.estimates.items()}
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    identified = [e for e in cal.estimates.values() if e.identified]
    print(f"identified {len(identified)} of {len(cal.estimates)} parameters")
    for e in identified:
        print(f"  {e.name:28s} {_fmt(e.value)} +- {_fmt(e.std)} {e.unit} (prior {_fmt(e.prior)})")
    for w in cal.warnings:  # what the data cannot identify, with the reason
        print(f"  not identified: {w}")
    if cc is not None:
        _print_contact(cc)
    for k, v in paths.items():
        print(f"{k:12s} {v}")
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]"
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)
