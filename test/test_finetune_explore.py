"""`simreal finetune FAMILY --data DS --from-exploration` (issue 14): the task policy learned with SB3
SAC online in the simulator, every batch mixing in the exploration family's real transitions (the
latent dropped); a normal push bundle with provenance. The family is only read.

Real MuJoCo, SB3 SAC, Minari datasets, ONNX Runtime. The 'real' sessions are the family run on a
hidden slippery table (`simulate(..., real=...)`, the fine-tuning tests' stand-in for a recorded
session; test_explore_session.py records the same through the graph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("minari")

from simreal_ros.finetune.data import bundle_hash, simulate, write_dataset  # noqa: E402
from simreal_ros.policy.bundle import load_bundle  # noqa: E402
from simreal_ros.sim.push_env import PUSH_TERMS, PushEnv  # noqa: E402

N = 2
SLIPPERY = str(Path(__file__).parent / "data" / "hidden_table_slippery.yaml")


@pytest.fixture(scope="module")
def family_and_data(tmp_path_factory):
    from simreal_ros.policy.onnx_linear import write_linear_bundle

    tmp = tmp_path_factory.mktemp("fx")
    env = PushEnv()
    family = write_linear_bundle(tmp / "family", env.robot, terms=(*PUSH_TERMS, ("latent", N)), gain=0.5,
                                 action_type="tool_planar_delta", action_scale=env.task.action_scale,
                                 control_rate_hz=env.task.control_rate_hz, action_planar=env.action_planar,
                                 action_max_change=env.task.action_max_change, name="linear_family",
                                 provenance={"training": {"env": {"id": "SimReal/Push-v0"}}})
    loaded = load_bundle(family, env.robot)
    steps = simulate(loaded, "push", episodes=2, seed=4, noise_std=0.2, real=SLIPPERY)
    ds = write_dataset(steps, loaded, "push", tmp / "ds", {"source": "test: the family on the slippery table"})
    return family, ds, steps, tmp


def test_the_task_policy_learned_from_exploration_data_is_a_normal_push_bundle(family_and_data):
    from simreal_ros.finetune.explore import finetune_from_exploration

    family, ds, steps, tmp = family_and_data
    # the family's episodes ran their codes in turn: the last N columns are the one-hot code
    assert [int(np.argmax(steps.observations[a, -N:])) for a, _ in steps.episode_bounds] == [0, 1]
    before = bundle_hash(family)
    res = finetune_from_exploration(family, [ds], tmp / "task", timesteps=300, batch_size=64, net="32,32",
                                    seed=1, progress=False, randomization="nominal", command="test")
    assert bundle_hash(family) == before  # only read
    env = PushEnv()
    b = load_bundle(res["out"], env.robot)  # ONNX Runtime, checked against the manifest
    m = b.manifest
    assert m.term_names == list(PUSH_TERMS) and m.obs_dim == 26  # the task's terms: no latent
    assert m.action_type == "tool_planar_delta" and m.action_planar == env.action_planar
    assert m.action_max_change == env.task.action_max_change
    fx = m.provenance["from_exploration"]
    assert fx["family"] == {"name": "linear_family", "sha256": before, "path": str(Path(family).resolve()),
                            "latent_size": N}
    assert fx["real_transitions"] == len(steps) and fx["real_episodes"] == 2 and fx["real_episode_latents"] == [0, 1]
    assert fx["datasets"][0]["path"] == str(Path(ds).resolve())
    assert m.provenance["training"]["algorithm"] == "SAC" and m.provenance["training"]["timesteps"] == 300
    assert "action_statistics" in m.provenance
    obs, _ = env.reset(seed=3)
    a = b.backend(m.normalize(obs))
    assert a.shape == (2,) and np.all(np.isfinite(a))


def test_the_task_policy_can_learn_from_the_first_real_episodes_only(family_and_data):
    """For success against the real episodes used: `--real-episodes K` takes the first K recorded."""
    from simreal_ros.finetune.explore import finetune_from_exploration

    family, ds, steps, tmp = family_and_data
    (a, b), _ = steps.episode_bounds
    res = finetune_from_exploration(family, [ds], tmp / "task_first", timesteps=50, batch_size=32, net="16",
                                    seed=1, progress=False, randomization="nominal", real_episodes=1)
    fx = load_bundle(res["out"], PushEnv().robot).manifest.provenance["from_exploration"]
    assert (fx["real_episodes"], fx["recorded_episodes"], fx["real_transitions"]) == (1, 2, b - a)
    assert fx["real_episode_latents"] == [0] and res["real_transitions"] == b - a < len(steps)


def test_every_batch_mixes_in_the_real_transitions_at_the_ratio():
    import gymnasium as gym

    from simreal_ros.finetune.explore import make_mixed_buffer_class

    space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    k = 50
    real = {"observations": np.full((k, 3), 7.0), "next_observations": np.full((k, 3), 8.0),
            "actions": np.full((k, 2), 0.5), "rewards": np.full(k, 2.0), "dones": np.zeros(k)}
    buf = make_mixed_buffer_class()(1000, space, act, device="cpu", real=real, real_ratio=0.25)
    s = buf.sample(64)
    assert s.observations.shape == (64, 3) and bool(np.all(s.observations.numpy() == 7.0))  # nothing simulated yet
    for _ in range(200):
        buf.add(np.full((1, 3), -1.0), np.full((1, 3), -2.0), np.zeros((1, 2)), np.array([-1.0]), np.array([False]),
                [{}])
    s = buf.sample(64)
    rows = s.observations.numpy()[:, 0]
    assert int(np.sum(rows == 7.0)) == 16 and int(np.sum(rows == -1.0)) == 48
    assert np.all(s.rewards.numpy()[rows == 7.0] == 2.0) and np.all(s.next_observations.numpy()[rows == 7.0] == 8.0)


def test_a_bundle_without_a_latent_or_data_of_another_policy_is_refused_with_one_line(family_and_data, capsys):
    from simreal_ros.cli import main
    from simreal_ros.resources import resource

    family, ds, _, tmp = family_and_data
    shipped = str(resource("policies", "push_default"))
    cases = [([shipped, "--data", str(ds)], "has no 'latent' observation term"),
             ([str(family), "--data", str(tmp / "nothing")], "nothing"),
             ([str(family), "--data", str(ds), "--sim-ratio", "1.0"], "--sim-ratio must be in [0, 1)"),
             ([str(family), "--data", str(ds), "--real-episodes", "3"], "3 real episodes asked for, the data hold 2")]
    for argv, match in cases:
        out = tmp / "refused"
        assert main(["finetune", *argv, "--from-exploration", "--out", str(out), "--timesteps", "10",
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("simreal finetune: error: ") and match in err[0], err
        assert not out.exists()


def test_the_warm_start_makes_the_task_policy_push_like_the_expert(family_and_data):
    """``--pretrain-steps`` (the family's DAgger warm start) and ``--actor-warmup`` (critics first):
    the learned task policy's actions point where the scripted pusher's do (mean cosine 0.97 when
    written); SAC from scratch with the same budget does not (0.12)."""
    from simreal_ros.finetune.explore import finetune_from_exploration
    from simreal_ros.training.tasks import task

    family, ds, _, tmp = family_and_data
    spec = task("push")
    common = dict(timesteps=300, batch_size=64, net="64,64", seed=2, progress=False, randomization="nominal")
    warm = finetune_from_exploration(family, [ds], tmp / "warm", pretrain_steps=3000, dagger_iterations=2,
                                     actor_warmup=300, **common)
    cold = finetune_from_exploration(family, [ds], tmp / "cold", **common)
    env = PushEnv()

    def agreement(out: str) -> float:
        b = load_bundle(out, env.robot)
        cos = []
        for seed in range(5):
            obs, _ = env.reset(seed=100 + seed)
            a, e = b.backend(b.manifest.normalize(obs)), spec.expert(env, np.zeros(2))
            cos.append(float(a @ e / (np.linalg.norm(a) * np.linalg.norm(e) + 1e-9)))
        return float(np.mean(cos))

    m = load_bundle(warm["out"], env.robot).manifest
    assert m.provenance["training"]["pretraining"]["steps"] == 3000 and m.provenance["training"]["actor_warmup"] == 300
    assert agreement(warm["out"]) > 0.8 > agreement(cold["out"])
