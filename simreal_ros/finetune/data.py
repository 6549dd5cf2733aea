"""Transitions for fine-tuning and OPE: logged datasets checked against a bundle, simulated rollouts,
and d3rlpy episodes.

:class:`Steps` holds aligned per-step arrays in the conventions of
:class:`simreal_ros.dataset.Transitions` (raw observations in the manifest's term order, the
executed action, the policy's proposal where it made one, the task's reward, terminal/timeout
closing every episode). :func:`load_logged` reads ``simreal dataset`` directories and refuses one
that does not fit the bundle (another task or robot, another observation or action); a refusal is a
:class:`DataError` naming the dataset and both sides. :func:`simulate` rolls a bundle out in a
task's env (randomized, or a hidden "real" arm/table) with exploration noise: the simulated half of
the fine-tuning replay, and the tests' stand-in for a recorded session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


class DataError(ValueError):
    """Data that does not fit the bundle, or is empty (the message names it)."""


@dataclass
class Steps:
    """Aligned per-step arrays (``N`` rows); rows of an episode are contiguous, in time order."""

    observations: np.ndarray  # (N, obs_dim) raw
    actions: np.ndarray  # (N, action_dim) executed
    proposed_actions: np.ndarray  # (N, action_dim), NaN where has_proposal is False
    has_proposal: np.ndarray  # (N,) bool
    rewards: np.ndarray  # (N,)
    next_observations: np.ndarray  # (N, obs_dim)
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    intervened: np.ndarray  # (N,) bool
    episode: np.ndarray  # (N,) int, unique across concatenated sources
    stamps: np.ndarray  # (N,) s

    def __len__(self) -> int:
        return int(len(self.rewards))

    @property
    def episode_bounds(self) -> list[tuple[int, int]]:
        """(first row, end row) of each episode."""
        if not len(self):
            return []
        starts = np.flatnonzero(np.concatenate([[True], np.diff(self.episode) != 0]))
        ends = np.concatenate([starts[1:], [len(self)]])
        return [(int(a), int(b)) for a, b in zip(starts, ends)]

    def first_episodes(self, k: int) -> Steps:
        """The first ``k`` episodes in recording order (the sources' order, each in time order)."""
        bounds = self.episode_bounds
        if not 1 <= k <= len(bounds):
            raise DataError(f"{k} real episodes asked for, the data hold {len(bounds)}")
        end = bounds[k - 1][1]
        return Steps(**{f.name: getattr(self, f.name)[:end] for f in fields(self)})

    @classmethod
    def from_transitions(cls, t: Any) -> Steps:
        """From a :class:`simreal_ros.dataset.Transitions` (or anything with its arrays)."""
        return cls(**{f.name: np.asarray(getattr(t, f.name)) for f in fields(cls)})

    @classmethod
    def concat(cls, parts: Sequence[Steps]) -> Steps:
        out: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(cls)}
        offset = 0
        for p in parts:
            for f in fields(cls):
                v = getattr(p, f.name)
                out[f.name].append(v + offset if f.name == "episode" else v)
            if len(p):
                offset += int(p.episode.max()) + 1
        return cls(**{k: np.concatenate(v) for k, v in out.items()})


def bundle_hash(directory: str | Path) -> str:
    """sha256 over every file of a bundle directory (relative names and bytes, sorted): what a
    fine-tuned bundle names its parent by, and what shows that the parent was not touched."""
    root = Path(directory)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def check_against_bundle(meta: Any, manifest: Any, task_name: str, where: str) -> None:
    """Refuse a dataset (its :class:`~simreal_ros.dataset.DatasetMeta`) that another task, robot,
    observation or action produced than the bundle's."""
    name = manifest.name
    if meta.task != task_name:
        raise DataError(f"dataset {where} is of task '{meta.task}' but bundle '{name}' is a {task_name} policy")
    if meta.robot != manifest.robot_name or tuple(meta.joint_names) != tuple(manifest.joint_names):
        raise DataError(f"dataset {where} was recorded on robot '{meta.robot}' joints {list(meta.joint_names)}, but "
                        f"bundle '{name}' is for robot '{manifest.robot_name}' joints {list(manifest.joint_names)}")
    ours = [(n, int(s)) for n, s in manifest.obs_terms]
    theirs = [(str(n), int(s)) for n, s in zip(meta.obs_terms, meta.obs_sizes)]
    if ours != theirs:
        raise DataError(f"dataset {where} observes {theirs} but bundle '{name}' observes {ours} (observation "
                        "terms and sizes must match, in order)")
    act = (manifest.action_type, float(manifest.action_scale), float(manifest.action_clip))
    got = (meta.action_type, float(meta.action_scale), float(meta.action_clip))
    if act[0] != got[0] or not np.allclose(act[1:], got[1:]):
        raise DataError(f"dataset {where} has actions (type, scale, clip) {got} but bundle '{name}' has {act}")


def load_logged(paths: Sequence[str | Path], manifest: Any, task_name: str) -> tuple[Steps, list[dict[str, Any]]]:
    """The transitions of the dataset directories ``paths``, checked against the bundle, and what
    each one is (for provenance). An empty dataset, or none at all, is a :class:`DataError`."""
    from simreal_ros.dataset import DatasetError, load, read_meta

    if not paths:
        raise DataError("no dataset given (--data DS [DS ...])")
    parts, info = [], []
    for p in paths:
        p = Path(p)
        try:
            meta = read_meta(p)
            check_against_bundle(meta, manifest, task_name, str(p))
            t = load(p)
        except DatasetError as exc:
            raise DataError(str(exc)) from None
        if len(t) == 0:
            raise DataError(f"dataset {p} has no transitions")
        parts.append(Steps.from_transitions(t))
        info.append({"path": str(p.resolve()), "transitions": len(t), "episodes": int(len(np.unique(t.episode))),
                     "bundle_name": meta.bundle_name, "bundle_hash": meta.bundle_hash,
                     "observation_source": meta.observation_source,
                     "interventions": int(np.sum(t.intervened)),
                     "bags": [b.get("path") for b in (meta.provenance.get("bags") or []) if isinstance(b, dict)]})
    return Steps.concat(parts), info


def normalized(manifest: Any, obs: np.ndarray) -> np.ndarray:
    """The model input for raw observations (the manifest's normalization), float32."""
    return manifest.normalize(np.asarray(obs, dtype=float)).astype(np.float32)


def simulate(bundle: Any, task_name: str, episodes: int, seed: int, noise_std: float = 0.1,
             randomization: Any = "nominal", real: Any = None,
             progress: Callable[[int], None] | None = None, driver: str = "policy") -> Steps:
    """Roll ``bundle`` out in the task's env: each step the policy's action plus Gaussian noise of
    ``noise_std`` (clipped to the action clip) is executed; the proposal is kept beside it.
    ``driver="expert"``: the task's expert (the push task's scripted pusher, the reach task's
    resolved-rate controller: :mod:`simreal_ros.training.tasks`) acts instead, the policy's
    proposals kept beside it, as in a shadow session.

    ``randomization``: a profile name, a calibration file or ranges; ``real``: a hidden arm/table
    file instead (exact values, no randomization). Episode ``k`` uses seed ``seed + k``; an
    exploration family (a ``latent`` term) runs its code ``k mod N`` in episode ``k``, as
    ``simreal explore`` cycles it.
    """
    if driver not in ("policy", "expert"):
        raise ValueError(f"driver must be 'policy' or 'expert', got {driver!r}")
    from simreal_ros.training.tasks import task

    spec = task(task_name)
    base = spec.make_env(real=real) if real is not None else spec.make_env(randomization=randomization)
    m = bundle.manifest
    n_latent = dict(m.obs_terms).get("latent")
    env = base
    if n_latent is not None:
        from simreal_ros.training.explore import LatentWrapper

        env = LatentWrapper(base, n_latent)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {f.name: [] for f in fields(Steps)}
    period = base.control_period
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k, options=None if n_latent is None else {"latent": k % n_latent})
            last = np.zeros(m.action_dim)
            for i in range(base.max_steps):
                proposal = np.clip(np.asarray(bundle.infer(normalized(m, obs)), dtype=float).ravel(),
                                   -m.action_clip, m.action_clip)
                act = proposal if driver == "policy" else np.asarray(spec.expert(base, last), dtype=float)
                action = np.clip(act + rng.normal(0.0, noise_std, proposal.shape), -m.action_clip, m.action_clip)
                last = action
                nxt, reward, terminated, truncated, _ = env.step(action)
                done = terminated or truncated or i == base.max_steps - 1
                for key, val in (("observations", obs), ("actions", action), ("proposed_actions", proposal),
                                 ("has_proposal", True), ("rewards", reward), ("next_observations", nxt),
                                 ("terminals", terminated), ("timeouts", done and not terminated),
                                 ("intervened", False), ("episode", k),
                                 ("stamps", (k * (base.max_steps + 10) + i) * period)):
                    rows[key].append(val)
                obs = nxt
                if done:
                    break
            if progress is not None:
                progress(1)
    finally:
        env.close()
    dtypes = {"has_proposal": bool, "terminals": bool, "timeouts": bool, "intervened": bool, "episode": np.int64}
    return Steps(**{k: np.asarray(v, dtype=dtypes.get(k, np.float64)) for k, v in rows.items()})


def episodes_for_d3rlpy(steps: Steps, manifest: Any) -> list:
    """d3rlpy episodes of normalized observations. A terminal episode is its rows; an episode cut
    by a timeout gets its last next-observation appended (with a zero action and reward that no
    transition uses), so its last step bootstraps from where it led."""
    from d3rlpy.dataset import Episode

    obs = normalized(manifest, steps.observations)
    nxt = normalized(manifest, steps.next_observations)
    out = []
    for a, b in steps.episode_bounds:
        o, act, r = obs[a:b], steps.actions[a:b].astype(np.float32), steps.rewards[a:b].astype(np.float32)
        terminated = bool(steps.terminals[b - 1])
        if not terminated:
            o = np.concatenate([o, nxt[b - 1:b]])
            act = np.concatenate([act, np.zeros_like(act[:1])])
            r = np.concatenate([r, np.zeros(1, np.float32)])
        out.append(Episode(observations=o, actions=act, rewards=r.reshape(-1, 1), terminated=terminated))
    return out


def write_dataset(steps: Steps, bundle: Any, task_name: str, out: str | Path, provenance: dict[str, Any]) -> Path:
    """Write ``steps`` of ``bundle`` as a ``simreal dataset`` directory (:func:`simreal_ros.dataset.write`):
    simulated sessions in the recorded sessions' format (``observation_source`` ``simulated``)."""
    from simreal_ros.dataset import INTERVENTION_KINDS, DatasetMeta, Transitions, write

    m = bundle.manifest
    meta = DatasetMeta(task=task_name, robot=m.robot_name, joint_names=tuple(m.joint_names),
                       obs_terms=tuple(m.term_names), obs_sizes=tuple(int(s) for _, s in m.obs_terms),
                       action_type=m.action_type, action_scale=float(m.action_scale),
                       action_clip=float(m.action_clip), action_max_change=getattr(m, "action_max_change", None),
                       control_rate_hz=float(m.control_rate_hz), bundle_name=m.name,
                       bundle_hash=bundle_hash(bundle.directory), observation_source="simulated",
                       provenance=provenance)
    n = len(steps)
    t = Transitions(observations=steps.observations, actions=steps.actions, proposed_actions=steps.proposed_actions,
                    rewards=steps.rewards, next_observations=steps.next_observations, terminals=steps.terminals,
                    timeouts=steps.timeouts, intervened=steps.intervened,
                    intervention_kinds=np.zeros((n, len(INTERVENTION_KINDS)), bool), has_proposal=steps.has_proposal,
                    stamps=steps.stamps, state_stamps=steps.stamps, episode=steps.episode, meta=meta)
    return write(t, out, description=f"simreal_ros {task_name}: {len(steps.episode_bounds)} simulated episodes of "
                                     f"'{m.name}'")
