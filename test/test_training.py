"""`simreal train`: a tiny real training run (SB3 + the sim) gives a bundle that loads and validates,
whose ONNX model is the trained policy and whose manifest holds the normalisation and provenance."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("torch")

from simreal_ros.policy.bundle import load_bundle  # noqa: E402
from simreal_ros.robot import load_robot  # noqa: E402
from simreal_ros.training.train import main  # noqa: E402


def test_tiny_ppo_run_exports_a_bundle_that_loads_and_matches_the_trained_policy(tmp_path):
    out, work = tmp_path / "bundle", tmp_path / "work"
    argv = ["--timesteps", "256", "--n-envs", "2", "--net", "16,16", "--seed", "3", "--out", str(out),
            "--workdir", str(work), "--no-progress"]
    assert main(argv) == 0
    bundle = load_bundle(out, load_robot())  # validates manifest, joints and model shapes
    m = bundle.manifest
    assert (m.obs_dim, m.n_joints, m.action_type, m.control_rate_hz) == (30, 7, "joint_position_delta", 20.0)
    prov = m.provenance
    assert prov["tool"] == "simreal train" and prov["seed"] == 3
    assert prov["command"] == "simreal train " + " ".join(argv)
    assert prov["training"]["algorithm"] == "PPO" and prov["training"]["wall_time_s"] > 0
    assert prov["randomization"]["profile"] == "default"

    # normalisation = VecNormalize's running statistics, std = sqrt(var + eps)
    with open(work / "vecnormalize.pkl", "rb") as f:
        vn = pickle.load(f)
    assert np.allclose(m.obs_mean, vn.obs_rms.mean)
    assert np.allclose(m.obs_std, np.sqrt(vn.obs_rms.var + vn.epsilon))
    assert m.obs_clip == vn.clip_obs

    # the ONNX graph is SB3's deterministic action
    from stable_baselines3 import PPO

    model = PPO.load(work / "model.zip", device="cpu")
    x = np.random.default_rng(0).normal(size=(16, 30)).astype(np.float32)
    expected, _ = model.predict(x, deterministic=True)  # SB3 clips to the action space
    assert np.allclose(np.clip(bundle.infer(x), -1, 1), expected, atol=1e-5)


def test_sac_and_dagger_warm_start_also_export_valid_bundles(tmp_path):
    assert main(["--algo", "sac", "--timesteps", "200", "--n-envs", "1", "--net", "16,16", "--stats-episodes", "1",
                 "--out", str(tmp_path / "sac"), "--no-progress"]) == 0
    sac = load_bundle(tmp_path / "sac", load_robot())
    x = np.random.default_rng(1).normal(size=(8, 30)).astype(np.float32) * 5
    assert np.all(np.abs(sac.infer(x)) <= 1.0)  # tanh squashing is in the graph

    assert main(["--timesteps", "128", "--n-envs", "2", "--net", "16,16", "--pretrain-steps", "300",
                 "--dagger-iterations", "2", "--stats-episodes", "1", "--out", str(tmp_path / "dagger"),
                 "--no-progress"]) == 0
    prov = load_bundle(tmp_path / "dagger", load_robot()).manifest.provenance
    iters = prov["training"]["pretraining"]["iterations"]
    assert len(iters) == 2 and iters[-1]["samples"] == 300


def test_training_leaves_no_sb3_logger_directory_in_the_temporary_directory(tmp_path, monkeypatch):
    """SB3's default logger creates ``<tmp>/SB3-<date>`` at every ``learn`` even with no output."""
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert tempfile.gettempdir() == str(tmp)
    for algo, steps in (("ppo", 64), ("sac", 100)):
        assert main(["--algo", algo, "--timesteps", str(steps), "--n-envs", "1", "--net", "8,8", "--stats-episodes",
                     "1", "--out", str(tmp_path / algo), "--no-progress"]) == 0
    assert (tmp_path / "ppo" / "manifest.yaml").is_file() and (tmp_path / "sac" / "manifest.yaml").is_file()
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("SB3-")) == []


@pytest.mark.parametrize("argv,match", [
    (["--algo", "sac", "--pretrain-steps", "10"], "--pretrain-steps needs --algo ppo"),
    (["--randomization", "nosuchprofile"], "nosuchprofile"),
    (["--timesteps", "0"], "--timesteps"),
    (["--stats-episodes", "0"], "--stats-episodes"),
    (["--ray", "--subproc"], "--ray and --subproc"),
])
def test_bad_arguments_are_refused_with_a_clear_message(tmp_path, capsys, argv, match):
    assert main([*argv, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simreal train: error: ") and match in err[0], err
    assert not (tmp_path / "x").exists()


def test_push_training_with_the_pusher_warm_start_exports_a_planar_bundle_the_executor_runs(tmp_path):
    """`simreal train --task push`: a short DAgger (scripted pusher) + PPO run gives a
    tool_planar_delta bundle whose plane, terms and inputs are the push env's, run by the executor,
    and whose policy has learned from the pusher: on states of seeds it never saw it moves the tool
    the way the pusher would (mean cosine of the two actions) far more than the same network and
    seed without the warm start."""
    from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
    from simreal_ros.sim.push_env import PUSH_TERMS, PushEnv
    from simreal_ros.training.tasks import push_expert

    env = PushEnv()

    def agreement(pretrain_steps: int) -> tuple[float, object]:
        out = tmp_path / f"push{pretrain_steps}"
        assert main(["--task", "push", "--timesteps", "256", "--n-envs", "2", "--net", "64,64", "--seed", "1",
                     "--pretrain-steps", str(pretrain_steps), "--dagger-iterations", "2", "--stats-episodes", "2",
                     "--out", str(out),
                     "--no-progress"]) == 0
        bundle = load_bundle(out, env.robot)
        ex = PolicyExecutor(bundle, env.robot, ExecutorConfig(compute_deadline=1e9, ood_revert=False))
        cosines = []
        for seed in (12345, 12346, 12347):
            obs, _ = env.reset(seed=seed)
            ex.reset()
            ex.set_goal(env.goal_point)
            last = np.zeros(2)
            for _ in range(25):  # the pusher drives; the policy's action is compared on every state
                meas, tr = env.measurement, env.tracked
                ex.update_state(meas.position, meas.velocity, meas.stamp)
                ex.update_object(tr.position, tr.stamp)
                res = ex.step(meas.stamp)
                assert res.command is not None, res.skipped  # the executor runs the bundle
                # the model's own answer on the env's observation (whose last action is the pusher's):
                # the executor's action would also carry its declared filter from its own last action
                act = np.clip(np.asarray(bundle.backend(bundle.manifest.normalize(obs)), float), -1, 1)
                label = push_expert(env, last)
                if np.linalg.norm(label) > 0.1:
                    cosines.append(float(act @ label / (np.linalg.norm(act) * np.linalg.norm(label) + 1e-9)))
                obs, *_ = env.step(label)
                last = label
        assert len(cosines) > 30
        return float(np.mean(cosines)), bundle

    warm, bundle = agreement(2500)
    m = bundle.manifest
    assert m.action_type == "tool_planar_delta" and m.action_dim == 2 and m.term_names == list(PUSH_TERMS)
    assert m.action_planar == env.action_planar and m.control_rate_hz == env.task.control_rate_hz
    assert m.provenance["training"]["env"]["id"] == "SimReal/Push-v0"
    assert m.provenance["action_statistics"]["episodes"] == 2  # --stats-episodes (the drift monitor's)
    assert "scripted pusher" in m.provenance["training"]["pretraining"]["method"]
    cold, _ = agreement(0)
    assert warm > 0.25 and warm > cold + 0.2, (warm, cold)
