"""Session datasets (issue 13, "Sessions to datasets"): the Minari writer and the reader API
(:mod:`simreal_ros.dataset`) other commands (finetune, ope) build on."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.dataset import INTERVENTION_KINDS, DatasetError, DatasetMeta, Transitions, load, read_meta, write

JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))


def _meta(**kw) -> DatasetMeta:
    base = dict(task="push", robot="panda", joint_names=JOINTS, obs_terms=("joint_pos", "joint_vel", "tool_xy"),
                obs_sizes=(7, 7, 2), action_type="tool_planar_delta", action_scale=0.02, action_clip=1.0,
                action_max_change=None, control_rate_hz=10.0, bundle_name="b", bundle_hash="0" * 64,
                observation_source="policy_records", provenance={"bags": [{"path": "x", "sha256": "y"}]})
    return DatasetMeta(**{**base, **kw})


def _transitions(lengths=(5, 7), seed=0) -> Transitions:
    """Episodes of random rows, consistent as recorded data is (next observation = next row's)."""
    rng = np.random.default_rng(seed)
    meta = _meta()
    obs, nxt, ep, term, to = [], [], [], [], []
    for k, n in enumerate(lengths):
        o = rng.normal(size=(n + 1, meta.obs_dim))
        obs.append(o[:-1])
        nxt.append(o[1:])
        ep.append(np.full(n, k))
        term.append(np.r_[np.zeros(n - 1, bool), k == 0])
        to.append(np.r_[np.zeros(n - 1, bool), k != 0])
    n = sum(lengths)
    prop = rng.uniform(-1, 1, (n, 2))
    has = rng.uniform(size=n) > 0.3
    prop[~has] = np.nan
    kinds = rng.uniform(size=(n, len(INTERVENTION_KINDS))) > 0.8
    return Transitions(observations=np.concatenate(obs), actions=rng.uniform(-1, 1, (n, 2)), proposed_actions=prop,
                       rewards=rng.normal(size=n), next_observations=np.concatenate(nxt),
                       terminals=np.concatenate(term), timeouts=np.concatenate(to), intervened=kinds.any(axis=1),
                       intervention_kinds=kinds, has_proposal=has, stamps=100.0 + 0.1 * np.arange(n),
                       state_stamps=100.0 + 0.1 * np.arange(n) - 0.004, episode=np.concatenate(ep), meta=meta)


def test_written_dataset_opens_with_minari_and_reads_back_exactly(tmp_path, monkeypatch):
    import minari

    t = _transitions()
    out = write(t, tmp_path / "session_ds")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = minari.load_dataset("session_ds")
    assert ds.total_episodes == 2 and ds.total_steps == len(t)
    first = next(iter(ds.iterate_episodes()))
    assert np.array_equal(first.observations[:-1], t.observations[:5])
    assert np.array_equal(first.observations[-1], t.next_observations[4])
    u = load(out)
    assert u.meta == t.meta and read_meta(out) == t.meta
    for name in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts", "intervened",
                 "intervention_kinds", "has_proposal", "stamps", "state_stamps", "episode"):
        assert np.array_equal(getattr(u, name), getattr(t, name)), name
    assert np.array_equal(np.isnan(u.proposed_actions), np.isnan(t.proposed_actions))
    assert np.array_equal(u.proposed_actions[u.has_proposal], t.proposed_actions[t.has_proposal])
    assert u.episode_starts.tolist() == [0, 5]


def test_reader_refuses_other_task_robot_observation_and_non_datasets(tmp_path):
    out = write(_transitions(), tmp_path / "ds")
    with pytest.raises(DatasetError, match="is of task 'push', not 'reach'"):
        load(out, task="reach")
    with pytest.raises(DatasetError, match="recorded on robot 'panda'"):
        load(out, robot=("fr3_joint1",))
    with pytest.raises(DatasetError, match="observes"):
        load(out, obs_terms=("joint_pos",))
    with pytest.raises(DatasetError, match="not a dataset directory"):
        load(tmp_path)
    with pytest.raises(DatasetError, match="exists"):
        write(_transitions(), out)


def test_writer_refuses_inconsistent_transitions(tmp_path):
    t = _transitions()
    t.timeouts[2] = True  # an episode closed in its middle
    with pytest.raises(DatasetError, match="exactly one terminal or timeout"):
        write(t, tmp_path / "ds")
    t = _transitions()
    t.next_observations[1] += 1.0
    with pytest.raises(DatasetError, match="next row's observation"):
        write(t, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
