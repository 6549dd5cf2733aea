"""``simreal promote BUNDLE --to shadow|blend|active --evidence FILE [FILE ...] [--force]``.

Moves a policy bundle one rollout stage when its evidence meets the criteria
(:mod:`simreal_ros.rollout.promote`), and writes the decision with its evidence's content hashes
into the manifest's ``provenance.rollout`` (never the model or anything the policy hash covers).
Exit status: 0 promoted (or forced), 1 refused (a criterion failed; the refusal is recorded),
2 bad input (bundle, stage order, unreadable evidence, bad config; nothing is written).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from simreal_ros.rollout.stage import STAGES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="policy bundle directory")
    p.add_argument("--to", required=True, choices=STAGES[1:], help="the next stage (one stage at a time)")
    p.add_argument("--evidence", nargs="+", required=True, metavar="FILE",
                   help="OPE result JSON (to shadow), shadow-session bag directory (to blend), simreal sim "
                        "summary.json of a blend session (to active)")
    p.add_argument("--config", default=None, help="promotion thresholds (default: config/promotion.yaml)")
    p.add_argument("--force", action="store_true", help="move even if a criterion fails (recorded as forced)")


def run(args: argparse.Namespace) -> int:
    from simreal_ros.rollout.promote import PromotionConfig, PromotionError, promote
    from simreal_ros.settings import SettingError

    try:
        config = PromotionConfig.from_file(args.config)
        command = "simreal promote " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[2:]))
        d = promote(args.bundle, args.to, args.evidence, config, force=args.force, command=command)
    except (PromotionError, SettingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle '{d.state.name}' ({d.bundle}): {d.from_stage} -> {d.to_stage}: {d.decision.upper()}")
    for c in d.criteria:
        print(c.line())
    for e in d.evidence:
        print(f"  evidence {e.kind}: {e.path} sha256 {e.sha256[:16]}..." + "".join(f"\n    note: {n}" for n in e.notes))
    print(f"stage now '{d.state.stage}' (policy {d.state.policy_hash[:19]}...; recorded in "
          f"{d.bundle}/manifest.yaml provenance.rollout)")
    return 0 if d.moved else 1
