"""Evaluation episodes as Ray tasks: a pool of :class:`EpisodeWorker` actors (``ray.util.ActorPool``).

Each actor builds the environment and controller of a (randomization profile, controller) pair
once and keeps it for the next episodes; every episode is seeded and reset exactly as in the
local worker processes (:func:`simreal_ros.training.evaluate._run_chunk`), and an episode does
not depend on the ones run before it on the same actor, so the numbers equal the local run's.
The bundle's files travel with the actors (``ray.put``), so a cluster's nodes need no copy of it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

MAX_BUNDLE_BYTES = 256 * 2**20  # a policy bundle is a model and a manifest, not a dataset


def bundle_files(bundle: str | Path) -> dict[str, bytes]:
    """Every file of a bundle directory by relative path (what a remote actor rebuilds it from)."""
    root = Path(bundle)
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts}
    size = sum(len(b) for b in files.values())
    if size > MAX_BUNDLE_BYTES:
        raise ValueError(f"bundle {root} holds {size / 2**20:.0f} MiB; at most {MAX_BUNDLE_BYTES // 2**20} "
                         "MiB travel to Ray workers")
    return files


class EpisodeWorker:
    """One Ray actor: runs episodes of any (profile, controller) pair of one bundle."""

    def __init__(self, files: dict[str, bytes], no_shield: bool) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="simreal_bundle_")
        for rel, data in files.items():
            path = Path(self._dir.name) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.no_shield = no_shield
        self._setups: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _setup(self, profile: str, controller: str):
        key = (profile, controller)
        if key not in self._setups:
            from simreal_ros.training.evaluate import make_episode_setup

            self._setups[key] = make_episode_setup(self._dir.name, profile, controller)
        return self._setups[key]

    def run(self, profile: str, controller: str, seed: int) -> dict[str, Any]:
        from simreal_ros.training.evaluate import episode_summary

        env, runner = self._setup(profile, controller)
        return episode_summary(env, runner, seed, controller, not self.no_shield)

    def close(self) -> None:
        for env, _ in self._setups.values():
            env.close()
        self._dir.cleanup()


def run_on_ray(address: str, bundle: str | Path, requests: list[tuple[str, str, int]], no_shield: bool = False,
               workers: int | None = None, progress=None) -> list[dict[str, Any]]:
    """Episode summaries for ``requests`` ((profile, controller, seed) each), in request order.

    ``workers`` actors (default: the cluster's CPUs, at most one per request) share the requests;
    ``progress(n)`` is called as episodes finish.
    """
    from simreal_ros.scale import cluster_cpus, connect

    ray = connect(address, num_cpus=workers)
    from ray.util import ActorPool

    n = max(1, min(len(requests), workers or cluster_cpus(ray)))
    files = bundle_files(bundle)
    actor = ray.remote(num_cpus=1)(EpisodeWorker)
    files_ref = ray.put(files)  # one copy in the object store, not one per actor
    actors = [actor.remote(files_ref, no_shield) for _ in range(n)]
    pool = ActorPool(actors)
    out = []
    try:
        for res in pool.map(lambda a, r: a.run.remote(*r), requests):
            out.append(res)
            if progress is not None:
                progress(1)
    finally:
        ray.get([a.close.remote() for a in actors])
        for a in actors:
            ray.kill(a)
    return out
