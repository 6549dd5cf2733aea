"""Training action statistics for the drift monitor, recorded into a bundle's manifest.

The manifest's observation statistics come from training (VecNormalize); the actions' do not
exist there. :func:`record_action_statistics` runs the bundle's own policy through the executor
core on seeded episodes of its task under a randomization profile (the training one by
default), as ``simreal evaluate`` does, and stores the clipped actions' per-dimension mean and
std in ``provenance.action_statistics`` -- provenance, so the policy hash
(:func:`simreal_ros.rollout.stage.policy_hash`) does not change. ``simreal train`` calls it at
export; for an older bundle run ``python -m simreal_ros.training.action_stats BUNDLE``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: the std of a dimension that never moved is floored here (the monitor divides by it)
MIN_STD = 1e-3
#: shielded episodes the statistics come from when a bundle is written (train, finetune, explore)
EPISODES = 10


def action_statistics_of(bundle: str | Path, episodes: int = EPISODES, profile: str = "default",
                         seed: int = 20_000) -> dict[str, Any]:
    """``{mean, std, samples, episodes, profile, seed}`` of the policy's clipped actions."""
    from simreal_ros.training.episodes import run_episode
    from simreal_ros.training.evaluate import make_episode_setup

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env, runner = make_episode_setup(bundle, profile, "policy")
    runner.ex.action_log = log = []
    try:
        for s in range(seed, seed + episodes):
            run_episode(env, runner, s, True, "policy")
    finally:
        env.close()
    a = np.asarray(log, dtype=float)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{bundle}: {len(a)} commanded cycles in {episodes} episodes; too few for statistics")
    return {"mean": a.mean(axis=0).tolist(), "std": np.maximum(a.std(axis=0), MIN_STD).tolist(),
            "samples": int(len(a)), "episodes": int(episodes), "profile": profile, "seed": int(seed),
            "source": "simreal_ros.training.action_stats (executor core, shielded episodes)"}


def record_action_statistics(bundle: str | Path, episodes: int = EPISODES, profile: str = "default",
                             seed: int = 20_000) -> dict[str, Any]:
    """Compute (:func:`action_statistics_of`) and store them in ``provenance.action_statistics``."""
    import yaml

    from simreal_ros.policy.bundle import MANIFEST_FILE, PolicyManifest, read_manifest

    stats = action_statistics_of(bundle, episodes, profile, seed)
    manifest, directory = read_manifest(bundle)
    manifest.provenance = {**manifest.provenance, "action_statistics": stats}
    PolicyManifest.from_dict(manifest.to_dict())  # still valid
    (directory / MANIFEST_FILE).write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, width=120))
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simreal_ros.training.action_stats", description=__doc__.split("\n")[0])
    p.add_argument("bundle")
    p.add_argument("--episodes", type=int, default=EPISODES)
    p.add_argument("--profile", default="default")
    p.add_argument("--seed", type=int, default=20_000)
    args = p.parse_args(argv)
    try:
        stats = record_action_statistics(args.bundle, args.episodes, args.profile, args.seed)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.bundle}: action statistics from {stats['samples']} cycles of {stats['episodes']} episodes "
          f"recorded in provenance.action_statistics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
