"""``simreal dataset BAG [BAG ...] --out DS``: recorded sessions as a Minari dataset.

Reads the bags (:mod:`simreal_ros.dataset.build`: the policy node's per-cycle records, the
shield's sent commands and interventions, the states, goals and tracked object poses), builds
transitions at the policy rate with executed and proposed actions, the task's rewards and
terminations, and writes them with their provenance as a Minari dataset directory ``DS``
(:func:`simreal_ros.dataset.write`; ``minari.load_dataset`` or ``simreal_ros.dataset.load`` open it).

Exit codes: 0 written; 2 bad input (a bag, bundle or option it cannot use: one line on stderr
naming it); ``DS`` is never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="recorded session bag directories")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write (must not exist)")
    parser.add_argument("--bundle", default=None,
                        help="policy bundle directory: needed for baseline-only sessions (no policy records: the "
                             "observations are rebuilt with its terms); else checked against the recorded one")
    parser.add_argument("--calibration", default=None, help="calibration.yaml to name in the provenance")
    parser.add_argument("--robot", default="panda", help="robot description name (default: %(default)s)")
    parser.add_argument("--max-gap-periods", type=float, default=1.5,
                        help="cycles further apart than this many policy periods cut an episode (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        import minari  # noqa: F401
    except ModuleNotFoundError:
        print("simreal dataset: needs Minari: pip install -e '.[learn]' (minari[hdf5]==0.5.4)", file=sys.stderr)
        return 2
    from simreal_ros.dataset import DatasetError, write
    from simreal_ros.dataset.build import BuildOptions, build
    from simreal_ros.robot.errors import RobotDescriptionError

    if not (args.max_gap_periods >= 1.0):
        print(f"simreal dataset: --max-gap-periods {args.max_gap_periods}: must be >= 1", file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"simreal dataset: --out {args.out} exists (a dataset is never overwritten)", file=sys.stderr)
        return 2
    try:
        t = build(args.bags, BuildOptions(bundle=args.bundle, calibration=args.calibration,
                                          max_gap_periods=args.max_gap_periods, robot=args.robot))
        write(t, args.out)
    except (DatasetError, RobotDescriptionError) as exc:
        print(f"simreal dataset: {exc}", file=sys.stderr)
        return 2
    m = t.meta
    c = m.provenance["counts"]
    episodes = len(t.episode_starts)
    print(f"{args.out}: {len(t)} transitions in {episodes} episodes ({int(t.terminals.sum())} terminal, "
          f"{int(t.timeouts.sum())} cut) from {len(args.bags)} bag(s); task {m.task}, bundle {m.bundle_name} "
          f"({m.bundle_hash[:12]}), observations {m.observation_source}")
    print(f"  shield intervened in {int(t.intervened.sum())} of {len(t)} steps; policy proposals in "
          f"{int(t.has_proposal.sum())}; mean reward {float(t.rewards.mean()):.3f}; skipped cycles "
          f"{sum(c['skipped'].values())}, dropped after a terminal {c['dropped_after_terminal']}, without a sent "
          f"command {c.get('cycles_without_a_sent_command', 0)}")
    outcomes: dict[str, int] = {}
    for bag in m.provenance["bags"]:
        for g in bag.get("goals", []):
            outcomes[g["outcome"]] = outcomes.get(g["outcome"], 0) + 1
    print("  goals: " + (", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "none"))
    return 0
