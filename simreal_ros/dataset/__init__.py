"""Recorded sessions as offline-RL datasets (Minari format) and the small API to read them back.

``simreal dataset BAG ... --out DS`` (:mod:`simreal_ros.dataset.build`) writes ``DS`` as a Minari
dataset directory (``DS/data/main_data.hdf5`` + ``DS/data/metadata.json``): one Minari episode per
goal (or per continuous stretch of one goal), observations with one row more than actions (the
last next-observation), Minari's rewards/terminations/truncations, and per step in ``infos``
what the offline learner needs beside it. Open it with Minari itself::

    import minari
    ds = minari.MinariDataset("DS/data")              # or, with MINARI_DATASETS_PATH=<parent of DS>:
    ds = minari.load_dataset("DS")                    # (the directory's name)

or, flattened to transition arrays with the task's metadata, with :func:`load`::

    from simreal_ros.dataset import load
    t = load("DS")
    t.observations, t.actions, t.rewards, t.next_observations, t.terminals, t.timeouts
    t.proposed_actions, t.intervened, t.meta.obs_terms, t.meta.action_type, t.meta.provenance

Conventions (stable; the fine-tuning and OPE commands rely on them):

- ``observations[i]`` is the policy's observation vector at cycle ``i`` *unnormalized*, in the
  bundle manifest's term order (``meta.obs_terms``, sizes ``meta.obs_sizes``), float64; normalize
  with the bundle's statistics before feeding a model.
- ``actions[i]`` is the action *executed*: the shield's sent command mapped back into the
  bundle's action space (:func:`simreal_ros.policy.action.command_to_action`), clipped to
  ``±meta.action_clip``. ``proposed_actions[i]`` is what the policy proposed at that cycle (its
  model output clipped to ``±action_clip``), NaN where it proposed nothing (``has_proposal``
  False: a baseline-only session, or a skipped cycle).
- ``rewards[i]`` is the task's reward function (:mod:`simreal_ros.sim.rewards`) at the state
  after the step, from what the robot measured (joint states, the tracked object pose).
- ``terminals[i]``: the task ended there (push: the puck at the goal, or off the table; also
  when the goal was reached right after the episode's last cycle, see :mod:`simreal_ros.dataset.build`);
  ``timeouts[i]``: the episode was cut there otherwise (the goal changed, the recording ended, a
  gap). Exactly one of them closes every episode.
- ``intervened[i]``: the shield changed the executed command in that step;
  ``intervention_kinds[i, k]`` per kind ``meta.intervention_kinds[k]`` (position, velocity, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: the dataset format this package writes and reads (``metadata.json`` key ``simreal``)
FORMAT = "simreal_dataset/1"
#: the shield's intervention kinds, the columns of :attr:`Transitions.intervention_kinds`
#: (``other`` collects a kind a newer shield reports)
INTERVENTION_KINDS = ("position", "velocity", "acceleration", "jerk", "effort", "effort_rate", "tracking",
                      "cartesian", "other")
#: per-step arrays kept in the Minari episodes' ``infos`` (length = steps; see :class:`Transitions`)
STEP_INFOS = ("proposed_actions", "has_proposal", "intervened", "intervention_kinds", "stamps", "state_stamps")


class DatasetError(ValueError):
    """A dataset that cannot be written or read as asked (the message names it and why)."""


@dataclass(frozen=True)
class DatasetMeta:
    """What a dataset's numbers mean and where they came from.

    Attributes:
        task: ``reach`` or ``push`` (:mod:`simreal_ros.training.tasks`).
        robot: the robot description's name; joint_names: its joints, in order.
        obs_terms / obs_sizes: the observation's terms in order and their sizes.
        action_type, action_scale, action_clip: the bundle's action semantics
            (:mod:`simreal_ros.policy.action`); action_max_change: the most an action may change
            per step when the bundle declares it (``None``: not declared).
        control_rate_hz: the policy rate the transitions are at.
        bundle_name, bundle_hash: the policy bundle whose observation/action spaces these are
            (sha256 of its manifest and model file, :func:`simreal_ros.policy.bundle.content_hash`).
        observation_source: ``policy_records`` (the policy node's own records) or ``rebuilt``
            (rebuilt from the recorded states with the bundle's terms: a baseline-only session).
        provenance: bags (path, sha256, duration, what drove the arm), calibration, counts and
            notes (JSON-able).
    """

    task: str
    robot: str
    joint_names: tuple[str, ...]
    obs_terms: tuple[str, ...]
    obs_sizes: tuple[int, ...]
    action_type: str
    action_scale: float
    action_clip: float
    action_max_change: float | None
    control_rate_hz: float
    bundle_name: str
    bundle_hash: str
    observation_source: str
    intervention_kinds: tuple[str, ...] = INTERVENTION_KINDS
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @property
    def obs_dim(self) -> int:
        return int(sum(self.obs_sizes))

    @property
    def action_dim(self) -> int:
        from simreal_ros.policy.action import action_dim

        return action_dim(self.action_type, len(self.joint_names))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> DatasetMeta:
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: the simreal metadata is not JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise DatasetError(f"{where}: simreal metadata format {got!r}, expected {FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        required = {k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING
                    and f.default_factory is MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise DatasetError(f"{where}: simreal metadata lacks {missing}")
        d = {k: v for k, v in d.items() if k in known}
        for k in ("joint_names", "obs_terms", "intervention_kinds"):
            d[k] = tuple(str(x) for x in d[k])
        d["obs_sizes"] = tuple(int(x) for x in d["obs_sizes"])
        return cls(**d)


@dataclass
class Transitions:
    """A dataset flattened to aligned arrays, one row per transition (``N`` rows).

    ``episode[i]`` is the Minari episode index of row ``i`` (rows of an episode are contiguous,
    in time order); ``episode_starts`` the first row of each episode. See the module docstring
    for what each array means.
    """

    observations: np.ndarray  # (N, obs_dim) float64
    actions: np.ndarray  # (N, action_dim) executed
    proposed_actions: np.ndarray  # (N, action_dim), NaN where has_proposal is False
    rewards: np.ndarray  # (N,)
    next_observations: np.ndarray  # (N, obs_dim)
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    intervened: np.ndarray  # (N,) bool
    intervention_kinds: np.ndarray  # (N, len(meta.intervention_kinds)) bool
    has_proposal: np.ndarray  # (N,) bool
    stamps: np.ndarray  # (N,) s: the cycle's time (ROS clock of the recording)
    state_stamps: np.ndarray  # (N,) s: the stamp of the state the observation was built on
    episode: np.ndarray  # (N,) int
    meta: DatasetMeta

    def __len__(self) -> int:
        return int(len(self.rewards))

    @property
    def episode_starts(self) -> np.ndarray:
        return np.flatnonzero(np.concatenate([[True], np.diff(self.episode) != 0])) if len(self) else \
            np.zeros(0, int)

    def check(self, where: str = "transitions") -> None:
        """Raise :class:`DatasetError` when the arrays do not fit each other or the metadata."""
        n, m = len(self), self.meta
        shapes = {"observations": (n, m.obs_dim), "next_observations": (n, m.obs_dim),
                  "actions": (n, m.action_dim), "proposed_actions": (n, m.action_dim), "rewards": (n,),
                  "terminals": (n,), "timeouts": (n,), "intervened": (n,), "has_proposal": (n,),
                  "intervention_kinds": (n, len(m.intervention_kinds)), "stamps": (n,), "state_stamps": (n,),
                  "episode": (n,)}
        for name, shape in shapes.items():
            got = np.shape(getattr(self, name))
            if got != shape:
                raise DatasetError(f"{where}: {name} has shape {got}, expected {shape}")
        for name in ("observations", "next_observations", "actions", "rewards"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise DatasetError(f"{where}: {name} has non-finite values")
        if n and np.any(np.diff(self.episode) < 0):
            raise DatasetError(f"{where}: episode rows are not contiguous")
        ends = np.concatenate([self.episode[1:] != self.episode[:-1], [True]]) if n else np.zeros(0, bool)
        inner = np.flatnonzero(~ends)
        if len(inner) and not np.array_equal(self.next_observations[inner], self.observations[inner + 1]):
            raise DatasetError(f"{where}: inside an episode a next observation must be the next row's observation")
        closed = self.terminals | self.timeouts
        if np.any(closed != ends):
            raise DatasetError(f"{where}: every episode must end with exactly one terminal or timeout, and only there")


def _episode_buffers(t: Transitions):
    from minari.data_collector import EpisodeBuffer

    out = []
    for k, start in enumerate(t.episode_starts):
        end = int(t.episode_starts[k + 1]) if k + 1 < len(t.episode_starts) else len(t)
        rows = slice(int(start), end)
        obs = np.concatenate([t.observations[rows], t.next_observations[end - 1:end]])
        infos = {name: np.asarray(getattr(t, name)[rows]) for name in STEP_INFOS}
        # Minari keeps infos with one row per observation (the reset's first): repeat the last
        infos = {k2: np.concatenate([v, v[-1:]]) for k2, v in infos.items()}
        out.append(EpisodeBuffer(id=k, observations=obs, actions=np.asarray(t.actions[rows]),
                                 rewards=np.asarray(t.rewards[rows], float).tolist(),
                                 terminations=np.asarray(t.terminals[rows], bool).tolist(),
                                 truncations=np.asarray(t.timeouts[rows], bool).tolist(), infos=infos))
    return out


def write(t: Transitions, out: str | Path, description: str = "") -> Path:
    """Write ``t`` as a Minari dataset directory ``out`` (which must not exist); returns it.

    The Minari dataset id is ``out``'s name with ``-v0`` unless it already ends in ``-v<N>``;
    ``minari.load_dataset(<out's name>)`` opens it when ``MINARI_DATASETS_PATH`` is ``out``'s parent.
    """
    import gymnasium as gym
    import minari

    out = Path(out)
    t.check(str(out))
    if len(t) == 0:
        raise DatasetError(f"{out}: no transitions to write")
    if out.exists():
        raise DatasetError(f"{out} exists: choose a new --out (a dataset is never overwritten)")
    name = out.name
    from minari.dataset.minari_dataset import DATASET_ID_RE

    dataset_id = name if DATASET_ID_RE.fullmatch(name) and "-v" in name else f"{name}-v0"
    if not DATASET_ID_RE.fullmatch(dataset_id):
        raise DatasetError(f"{out}: '{name}' cannot name a Minari dataset (letters, digits, '-', '_' only)")
    m = t.meta
    obs_space = gym.spaces.Box(-np.inf, np.inf, (m.obs_dim,), np.float64)
    act_space = gym.spaces.Box(-m.action_clip, m.action_clip, (m.action_dim,), np.float64)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("MINARI_DATASETS_PATH")
    tmp = out.parent / f".{name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    os.environ["MINARI_DATASETS_PATH"] = str(tmp)
    try:
        with warnings.catch_warnings():
            # no env spec (the envs need the package) and no e-mail: Minari warns about both
            warnings.filterwarnings("ignore", category=UserWarning, module="minari")
            ds = minari.create_dataset_from_buffers(
                dataset_id, _episode_buffers(t), observation_space=obs_space, action_space=act_space,
                algorithm_name=f"simreal session ({m.observation_source})", author={"simreal_ros"},
                description=description or f"simreal_ros {m.task} session dataset (bundle {m.bundle_name})",
                code_permalink="simreal_ros/dataset", data_format="hdf5")
        ds.storage.update_metadata({"simreal": m.to_json()})
        (tmp / dataset_id).rename(out)  # complete or not there at all
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _data_path(ds_dir: Path) -> Path:
    for cand in (ds_dir / "data", ds_dir):
        if (cand / "metadata.json").is_file():
            return cand
    raise DatasetError(f"{ds_dir}: not a dataset directory (no data/metadata.json; write one with "
                       "`simreal dataset BAG ... --out DIR`)")


def read_meta(ds_dir: str | Path) -> DatasetMeta:
    """The :class:`DatasetMeta` of a dataset directory (without reading its episodes)."""
    ds_dir = Path(ds_dir)
    path = _data_path(ds_dir) / "metadata.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if "simreal" not in raw:
        raise DatasetError(f"{ds_dir}: a Minari dataset without simreal metadata (not written by `simreal dataset`)")
    return DatasetMeta.from_json(raw["simreal"], str(ds_dir))


def load(ds_dir: str | Path, *, task: str | None = None, robot: Any = None,
         obs_terms: Sequence[str] | None = None) -> Transitions:
    """The transitions of the dataset directory ``ds_dir`` (see :class:`Transitions`).

    ``task``, ``robot`` (a :class:`~simreal_ros.robot.RobotModel`, or its joint names) and
    ``obs_terms``, when given, must be the dataset's: a dataset of another task, robot or
    observation is refused with :class:`DatasetError` naming both sides.
    """
    import minari

    ds_dir = Path(ds_dir)
    meta = read_meta(ds_dir)
    check_compatible(meta, str(ds_dir), task=task, robot=robot, obs_terms=obs_terms)
    try:
        ds = minari.MinariDataset(_data_path(ds_dir))
        episodes = list(ds.iterate_episodes())
    except Exception as exc:  # noqa: BLE001 - h5py/minari fail in many ways on a damaged file
        raise DatasetError(f"{ds_dir}: the Minari data does not read ({type(exc).__name__}: {exc})") from None
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "next_observations", "actions", "rewards",
                                                        "terminals", "timeouts", "episode", *STEP_INFOS)}
    for k, ep in enumerate(episodes):
        n = len(ep.rewards)
        obs = np.asarray(ep.observations, dtype=np.float64)
        cols["observations"].append(obs[:n])
        cols["next_observations"].append(obs[1:n + 1])
        cols["actions"].append(np.asarray(ep.actions, dtype=np.float64).reshape(n, meta.action_dim))
        cols["rewards"].append(np.asarray(ep.rewards, dtype=np.float64))
        cols["terminals"].append(np.asarray(ep.terminations, dtype=bool))
        cols["timeouts"].append(np.asarray(ep.truncations, dtype=bool))
        cols["episode"].append(np.full(n, k, dtype=np.int64))
        for name in STEP_INFOS:
            if name not in ep.infos:
                raise DatasetError(f"{ds_dir}: episode {k} lacks infos['{name}']")
            cols[name].append(np.asarray(ep.infos[name])[:n])
    if not episodes:
        raise DatasetError(f"{ds_dir}: the dataset has no episodes")
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    t = Transitions(observations=cat["observations"], actions=cat["actions"],
                    proposed_actions=cat["proposed_actions"].astype(np.float64), rewards=cat["rewards"],
                    next_observations=cat["next_observations"], terminals=cat["terminals"],
                    timeouts=cat["timeouts"], intervened=cat["intervened"].astype(bool),
                    intervention_kinds=cat["intervention_kinds"].astype(bool),
                    has_proposal=cat["has_proposal"].astype(bool), stamps=cat["stamps"].astype(np.float64),
                    state_stamps=cat["state_stamps"].astype(np.float64), episode=cat["episode"], meta=meta)
    t.check(str(ds_dir))
    return t


def check_compatible(meta: DatasetMeta, where: str, *, task: str | None = None, robot: Any = None,
                     obs_terms: Sequence[str] | None = None) -> None:
    """Refuse (:class:`DatasetError`) a dataset of another task, robot or observation than asked."""
    if task is not None and meta.task != task:
        raise DatasetError(f"dataset {where} is of task '{meta.task}', not '{task}'")
    if robot is not None:
        names = tuple(getattr(robot, "joint_names", robot))
        rname = getattr(robot, "name", None)
        if tuple(meta.joint_names) != names or (rname is not None and rname != meta.robot):
            raise DatasetError(f"dataset {where} was recorded on robot '{meta.robot}' with joints "
                               f"{list(meta.joint_names)}, not {rname or 'this robot'} {list(names)}")
    if obs_terms is not None and tuple(obs_terms) != tuple(meta.obs_terms):
        raise DatasetError(f"dataset {where} observes {list(meta.obs_terms)}, not {list(obs_terms)}")


__all__ = ["FORMAT", "INTERVENTION_KINDS", "DatasetError", "DatasetMeta", "Transitions", "check_compatible", "load",
           "read_meta", "write"]
