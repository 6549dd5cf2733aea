"""``simreal explore BUNDLE --episodes K``: run an exploration family through the graph, recorded.

The bundle is a family of exploration policies (``simreal train --task push --explore N``: a
``latent`` observation term of size N). This runs the same graph as ``simreal sim --task push``
(:func:`simreal_ros.bringup.graph.build_graph`: shield active by default, the recorder on) with
the family's policy 0, and before each of the K episodes (goals) publishes the episode's code
``k mod N`` on the policy node's ``latent_topic`` (``std_msgs/Int32``), so the codes are cycled in
turn; the session is one bag whose policy records hold every observation with its latent
(``simreal dataset BAG --out DS`` makes the transitions ``simreal finetune --from-exploration``
learns from). ``--real FILE`` runs against a hidden "real" table/arm file, as ``simreal sim
--real-arm`` does.

On the robot the launch file takes the code: ``ros2 launch simreal_ros bringup.launch.py task:=push
mode:=real policy:=FAMILY latent:=k`` (and ``std_msgs/Int32`` on ``/simreal/policy/latent``
switches it between episodes).

Exit status: 0 when the session ran with no limit violation in the bag, 1 on a violation, 2 when
the bundle is no exploration family, an argument is bad or the graph did not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

LATENT_TOPIC = "/simreal/policy/latent"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="an exploration family's bundle (simreal train --task push --explore N)")
    p.add_argument("--episodes", type=int, default=None, help="episodes (goals) to run (default: N, each code once)")
    p.add_argument("--real", default="", help="hidden 'real' arm/table file (simreal_ros/sim/real_arm.py)")
    p.add_argument("--first-latent", type=int, default=0, help="code of the first episode (default: %(default)s)")
    p.add_argument("--shield-mode", default="active", choices=("active", "shadow", "blend", "hold"),
                   help="shield mode (default: %(default)s)")
    p.add_argument("--output-dir", default="runs", help="directory for the bag (default: %(default)s)")
    p.add_argument("--seed", default="0", help="seed of the sim's random draws (default: %(default)s)")
    p.add_argument("--randomization", default="nominal", help="sim randomization profile (default: %(default)s)")
    p.add_argument("--timing", default="paced", choices=("paced", "unpaced"), help="sim timing (default: paced)")
    p.add_argument("--goal-timeout", type=float, default=12.0, help="seconds per episode (default: %(default)s, the "
                   "push task's episode)")
    p.add_argument("--in-process", action="store_true", help="every node in this one process")
    p.add_argument("--force-stage", action="store_true", help="run a bundle under rollout in a mode its stage does "
                   "not allow (simreal promote)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def latent_size(bundle: str | Path) -> int:
    """The family's number of codes (ValueError naming the bundle when it has no ``latent`` term)."""
    from simreal_ros.policy.bundle import read_manifest

    manifest, directory = read_manifest(bundle)
    n = dict(manifest.obs_terms).get("latent")
    if n is None:
        raise ValueError(f"{directory}: policy '{manifest.name}' has no 'latent' observation term: not an exploration "
                         "family (simreal train --task push --explore N makes one)")
    return int(n)


def episode_latents(n: int, episodes: int, first: int = 0) -> list[int]:
    """The code of each episode: cycled from ``first``."""
    return [(first + k) % n for k in range(episodes)]


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy loads
    from simreal_ros.bringup.graph import GraphOptions, build_graph
    from simreal_ros.policy.bundle import BundleError

    try:
        n = latent_size(args.bundle)
        episodes = n if args.episodes is None else args.episodes
        if episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {episodes}")
        if not 0 <= args.first_latent < n:
            raise ValueError(f"--first-latent must be in [0, {n - 1}], got {args.first_latent}")
        latents = episode_latents(n, episodes, args.first_latent)
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        name = f"explore_{stamp}"
        opts = GraphOptions.from_strings({
            "mode": "sim", "task": "push", "policy": str(args.bundle), "shield_mode": args.shield_mode,
            "record": "true", "output_dir": args.output_dir, "timing": args.timing,
            "randomization": args.randomization, "seed": str(args.seed), "real_arm": args.real,
            "latent": str(latents[0]), "force_stage": str(bool(args.force_stage)).lower(), "bag_name": name})
        nodes = build_graph(opts)
    except (ValueError, BundleError, OSError) as exc:
        print(f"simreal explore: error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(opts.output_dir).resolve() / f"{name}_logs"
    published: list[int] = []

    def before_goal(i: int, coord: Any) -> None:
        from std_msgs.msg import Int32

        from simreal_ros.nodes.common import GOAL_QOS

        pub = getattr(coord, "_latent_pub", None)
        if pub is None:
            pub = coord._latent_pub = coord.create_publisher(Int32, LATENT_TOPIC, GOAL_QOS)  # latched
        pub.publish(Int32(data=int(latents[i])))
        published.append(int(latents[i]))

    from simreal_ros.bringup.session import run_session

    summary = run_session(nodes, opts, run_dir, goals=episodes, duration=0.0, goal_timeout=args.goal_timeout,
                          processes=not args.in_process, progress=not args.no_progress, before_goal=before_goal)
    summary["exploration"] = {"bundle": str(Path(args.bundle).resolve()), "latent_size": n,
                              "episode_latents": published, "real": args.real or None}
    for goal, z in zip(summary.get("goals", []), published):
        goal["latent"] = z
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from simreal_ros.bringup.cli import print_summary

        print_summary(summary)
        print(f"latents              {published} (of {n} codes)")
        if summary.get("bag"):
            print(f"next                 simreal dataset {summary['bag']} --out DS   (then simreal finetune "
                  "--from-exploration DS ...)")
    if summary.get("error"):
        return 2
    return 1 if summary["limit_violations"] else 0
