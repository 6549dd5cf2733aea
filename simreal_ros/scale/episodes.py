"""Evaluation episodes as Ray tasks: a pool of :class:`EpisodeWorker` actors (``ray.util.ActorPool``).

Each actor builds the environment and controller of a (randomization profile, controller) pair
once and keeps it for the next episodes; every episode is seeded and reset exactly as in the
local worker processes (:func:`simreal_ros.training.evaluate._run_chunk`), and an episode does
not depend on the ones run before it on the same actor, so the numbers equal the local run's.
The bundle's files travel with the actors (``ray.put``), and so do the files a condition names
(a calibration used as the randomization profile, a hidden 'real' arm): a cluster's nodes need
no copy of them.
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


def _named_file(profile: str) -> Path | None:
    """The file a condition's profile names, if any (same rule as the loaders use)."""
    from simreal_ros.sim.randomize import is_profile_file
    from simreal_ros.training.evaluate import REAL_PREFIX

    if profile.startswith(REAL_PREFIX):
        return Path(profile[len(REAL_PREFIX):])
    return Path(profile) if is_profile_file(profile) else None


def profile_files(profiles) -> dict[str, tuple[str, bytes]]:
    """profile -> (file name, content) for every profile that names a file."""
    out = {}
    for i, profile in enumerate(sorted(set(profiles))):
        path = _named_file(profile)
        if path is not None:
            out[profile] = (f"{i}_{path.name}", path.read_bytes())
    return out


class EpisodeWorker:
    """One Ray actor: runs episodes of any (profile, controller) pair of one bundle.

    ``files`` is the bundle directory by relative path, ``data`` the files some profiles name
    (:func:`profile_files`): the actor writes both to its own temporary directory and runs a
    profile that names a file on its copy.
    """

    def __init__(self, files: dict[str, bytes], no_shield: bool,
                 data: dict[str, tuple[str, bytes]] | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="simreal_bundle_")
        root = Path(self._dir.name)
        self.bundle = root / "bundle"
        for rel, content in files.items():
            path = self.bundle / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        self._profiles: dict[str, str] = {}
        for profile, (name, content) in (data or {}).items():
            (root / "data").mkdir(exist_ok=True)
            copy = root / "data" / name
            copy.write_bytes(content)
            original = _named_file(profile)
            self._profiles[profile] = profile.replace(str(original), str(copy)) if original else str(copy)
        self.no_shield = no_shield
        self._setups: dict[tuple[str, str], tuple[Any, Any]] = {}

    def local_profile(self, profile: str) -> str:
        """``profile`` as this actor runs it (a named file replaced by the actor's copy)."""
        return self._profiles.get(profile, profile)

    def _setup(self, profile: str, controller: str):
        key = (profile, controller)
        if key not in self._setups:
            from simreal_ros.training.evaluate import make_episode_setup

            self._setups[key] = make_episode_setup(self.bundle, self.local_profile(profile), controller)
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
    data_ref = ray.put(profile_files(r[0] for r in requests))
    actors = [actor.remote(files_ref, no_shield, data_ref) for _ in range(n)]
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
