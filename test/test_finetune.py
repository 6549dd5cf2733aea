"""simreal finetune / simreal ope on short real runs: the shipped push policy, MuJoCo episodes on a hidden
slippery table as the logged session, d3rlpy's TD3+BC and FQE, ONNX Runtime, the real shield core."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("d3rlpy")

from simreal_ros.finetune.data import DataError, Steps, bundle_hash, simulate, write_dataset  # noqa: E402
from simreal_ros.policy.bundle import load_bundle, read_manifest  # noqa: E402
from simreal_ros.robot import load_robot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUSH = ROOT / "policies" / "push_default"
SLIPPERY = ROOT / "test" / "data" / "hidden_table_slippery.yaml"
TINY = dict(steps=40, critic_warmup=10, distill_steps=40, batch_size=64)


@pytest.fixture(scope="module")
def logged() -> Steps:
    """Two episodes of the shipped push policy with exploration noise on the hidden slippery table."""
    return simulate(load_bundle(PUSH), "push", 2, seed=5, noise_std=0.15, real=SLIPPERY)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, logged) -> Path:
    """``logged`` as a dataset directory, written and read back by simreal_ros.dataset (Minari)."""
    out = tmp_path_factory.mktemp("ds") / "slippery_session"
    return write_dataset(logged, load_bundle(PUSH), "push", out, {"simulated": {"real": str(SLIPPERY)}})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, dataset):
    """A copy of the shipped bundle (hashed before), fine-tuned briefly with one simulated episode."""
    from simreal_ros.finetune.finetune import finetune

    base = tmp_path_factory.mktemp("ft")
    parent = base / "push_default"
    shutil.copytree(PUSH, parent)
    before = bundle_hash(parent)
    summary = finetune(parent, [dataset], base / "new", randomization="nominal", sim_episodes=1, progress=False,
                       command="test", **TINY)
    return parent, before, base / "new", summary


def test_finetune_writes_a_bundle_of_the_same_shape_and_leaves_the_parent_alone(tuned, logged, dataset):
    parent, before, new, summary = tuned
    assert bundle_hash(parent) == before
    assert sorted(p.name for p in parent.iterdir()) == ["manifest.yaml", "policy.onnx"]
    b = load_bundle(new, load_robot())  # real ONNX Runtime, checked against the manifest
    pm, nm = read_manifest(parent)[0].to_dict(), b.manifest.to_dict()
    for key in ("robot", "control_rate_hz", "observation", "action", "default_pose"):
        assert nm[key] == pm[key], key
    assert nm["name"] == "push_default_ft"
    prov = nm["provenance"]
    assert prov["tool"] == "simreal finetune" and prov["parent"]["sha256"] == before
    assert prov["parent"]["name"] == "push_default"
    assert [d["path"] for d in prov["datasets"]] == [str(dataset.resolve())]
    assert prov["datasets"][0]["transitions"] == len(logged) and prov["datasets"][0]["episodes"] == 2
    assert prov["calibration"]["randomization"] == "nominal" and prov["calibration"]["simulated_transitions"] > 0
    ft = prov["finetuning"]
    assert ft["library"].startswith("d3rlpy 2.8") and ft["algorithm"] == "TD3+BC"
    assert ft["hyperparameters"]["actor_lr"] == 3e-5 and ft["hyperparameters"]["steps"] == TINY["steps"]
    assert ft["transitions"]["logged"] == len(logged) and ft["wall_time_s"] > 0
    # the actor starts from the parent's own weights: only tanh-vs-clip differs before distillation
    # (a freshly initialised actor is about 0.5 away on these states)
    assert "read from its ONNX graph" in ft["initialization"]
    assert ft["distance_to_parent"]["initial"]["mean_abs"] < 0.15
    assert ft["distance_to_parent"]["after_distillation"]["mean_abs"] < ft["distance_to_parent"]["initial"][
        "mean_abs"]
    # the exported model is the trained actor, near the parent on the logged states
    obs = b.manifest.normalize(logged.observations)
    ref = np.clip(load_bundle(parent).infer(obs), -1, 1)
    new_actions = b.infer(obs)
    assert np.all(np.abs(new_actions) <= 1.0)
    assert 0 < np.mean(np.abs(new_actions - ref)) < 0.2
    # the summary's figure is the d3rlpy actor's (in torch) on the same states: the exported graph
    # agrees with it to float32 and the squashing at the action bounds (0.004 apart on the retrained
    # push policy, whose actions saturate more often)
    assert summary["distance_to_parent"]["final"]["mean_abs"] == pytest.approx(
        float(np.mean(np.abs(new_actions - ref))), abs=1e-2)


def test_out_equal_to_or_inside_the_bundle_or_not_empty_is_refused(tmp_path, logged):
    from simreal_ros.finetune.finetune import finetune

    parent = tmp_path / "p"
    shutil.copytree(PUSH, parent)
    before = bundle_hash(parent)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    for out, why in ((parent, "inside"), (parent / "sub", "inside"), (tmp_path / "full", "not an empty")):
        with pytest.raises(DataError, match=why):
            finetune(parent, logged, out, progress=False, **TINY)
    assert bundle_hash(parent) == before and (tmp_path / "full" / "x").read_text() == "keep"


def test_ope_reports_fqe_with_intervals_and_the_replay_through_the_shield(tuned, logged, dataset, tmp_path):
    from simreal_ros.finetune.ope import ope

    parent, _, new, _ = tuned
    rep = ope(new, [dataset], against=parent, fqe_steps=30, bootstrap=200, out=tmp_path / "ope.json", progress=False)
    assert json.loads((tmp_path / "ope.json").read_text())["episodes"] == 2
    for role in ("policy", "against"):
        p = rep["policies"][role]
        lo, hi = p["fqe_value_ci95"]
        assert lo <= p["fqe_value_mean"] <= hi
        r = p["replay"]
        assert r["transitions"] == len(logged)
        assert r["predicted_limit_violations"] == 0
        assert set(r["shield_intervention_kinds"]) <= {"position", "velocity", "acceleration", "jerk", "tracking",
                                                        "cartesian", "effort", "effort_rate"}
        assert 0 <= r["ood_excursion_rate"] <= 1
    # the parent's proposals on the logged states are the logged proposals themselves
    assert rep["policies"]["against"]["replay"]["proposal_mean_abs_diff_to_logged_proposals"] < 1e-5
    assert rep["policies"]["policy"]["replay"]["proposal_mean_abs_diff_to_logged_proposals"] > 1e-4
    lo, hi = rep["difference"]["fqe_value_ci95"]
    assert lo <= rep["difference"]["fqe_value_mean"] <= hi


def test_replay_counts_what_the_shield_does_with_a_wild_policy(tmp_path, logged):
    """A random network's proposals are far from what was executed and make the shield work."""
    from simreal_ros.finetune.ope import replay
    from simreal_ros.policy.export import write_random_bundle
    from simreal_ros.sim.push_env import PUSH_TERMS

    robot = load_robot()
    pm = read_manifest(PUSH)[0]
    wild = write_random_bundle(tmp_path / "wild", robot, terms=PUSH_TERMS, seed=3, action_type="tool_planar_delta",
                               action_scale=pm.action_scale, control_rate_hz=pm.control_rate_hz,
                               action_planar=pm.action_planar, mean=pm.obs_mean.tolist(), std=pm.obs_std.tolist())
    calm = replay(load_bundle(PUSH), logged, robot)
    rough = replay(load_bundle(wild), logged, robot)
    assert rough["proposal_mean_abs_diff_to_executed"] > 3 * calm["proposal_mean_abs_diff_to_executed"]
    assert rough["shield_interventions"] > calm["shield_interventions"]


def _variant(dataset: Path, out: Path, **meta) -> Path:
    """``dataset`` rewritten with other metadata (another task, robot or observation)."""
    from simreal_ros.dataset import load, write

    t = load(dataset)
    return write(dataclasses.replace(t, meta=dataclasses.replace(t.meta, **meta)), out)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "simreal_ros.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_bad_input_is_refused_with_one_line_naming_it(tmp_path, dataset, logged):
    """Another task, another robot, another observation, an empty or missing dataset, a missing bundle:
    both commands exit 2 with one line naming the dataset (or bundle) and what does not fit."""
    meta = __import__("simreal_ros.dataset", fromlist=["read_meta"]).read_meta(dataset)
    swapped = list(meta.obs_terms)
    swapped[2], swapped[3] = swapped[3], swapped[2]  # tool_xy <-> object_xy: same sizes, other meaning
    cases = {
        "reach": (_variant(dataset, tmp_path / "reach_ds", task="reach"), "task 'reach'"),
        "robot": (_variant(dataset, tmp_path / "robot_ds", robot="fr3"), "robot 'fr3'"),
        "obs": (_variant(dataset, tmp_path / "obs_ds", obs_terms=tuple(swapped)), "observes"),
        "empty": (tmp_path / "empty_ds", "not a dataset directory"),
    }
    (tmp_path / "empty_ds").mkdir()
    for name, (ds, why) in cases.items():
        for cmd in (["finetune", str(PUSH), "--data", str(dataset), str(ds), "--out", str(tmp_path / f"o_{name}"),
                     "--steps", "1"], ["ope", str(PUSH), "--data", str(ds), "--out", str(tmp_path / "r.json")]):
            res = _cli(*cmd)
            assert res.returncode == 2, (name, cmd[0], res.stderr[-2000:])
            assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
            assert why in res.stderr and str(ds) in res.stderr, (name, res.stderr)
        assert not (tmp_path / f"o_{name}").exists()
    res = _cli("finetune", str(tmp_path / "nope"), "--data", str(dataset), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nope" in res.stderr, res.stderr
    with pytest.raises(DataError, match="no rows"):
        from simreal_ros.finetune.finetune import finetune

        finetune(PUSH, Steps(**{f.name: getattr(logged, f.name)[:0] for f in dataclasses.fields(Steps)}),
                 tmp_path / "o2", progress=False, **TINY)


def test_cli_runs_both_commands_with_a_progress_bar_and_a_table(tmp_path, dataset):
    new = tmp_path / "new"
    res = _cli("finetune", str(PUSH), "--data", str(dataset), "--out", str(new), "--steps", "8", "--critic-warmup",
               "4", "--distill-steps", "4", "--batch-size", "32", "--name", "push_cli")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "simreal finetune" in res.stderr and "bundle written to" in res.stdout  # tqdm's bar is on stderr
    prov = read_manifest(new)[0].provenance
    assert prov["command"].startswith("simreal finetune ") and "--steps 8" in prov["command"]
    res = _cli("ope", str(new), "--data", str(dataset), "--against", str(PUSH), "--fqe-steps", "8", "--bootstrap",
               "20", "--out", str(tmp_path / "ope.json"), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    for label in ("FQE value", "95% CI", "shield interventions / 100 commands", "predicted limit violations",
                  "OOD excursion rate", "push_cli", "push_default"):
        assert label in res.stdout, (label, res.stdout)
    report = json.loads((tmp_path / "ope.json").read_text())
    assert report["policies"]["policy"]["name"] == "push_cli"
    # simreal promote takes what simreal ope wrote as its OPE evidence (it took only the loop's
    # converted form: "neither an OPE result"), bound to this policy and compared with the parent
    res = _cli("promote", str(new), "--to", "shadow", "--evidence", str(tmp_path / "ope.json"))
    assert res.returncode in (0, 1) and "neither an OPE result" not in res.stderr, res.stderr[-2000:]
    from simreal_ros.rollout.stage import read_stage

    crit = {c["name"]: c for c in read_stage(new).history[-1]["criteria"]}
    assert crit["ope evidence is of this policy"]["passed"] and crit["ope evidence is of this policy"]["value"] != "not stated"
    assert crit["FQE lower bound vs the parent's"]["threshold"].startswith(">= ")
    assert crit["FQE lower bound vs the parent's"]["value"] == round(report["policies"]["policy"]["fqe_value_ci95"][0], 6)


def test_a_shadow_session_keeps_the_policy_proposals_beside_what_the_expert_did():
    """driver='expert': the scripted pusher acts (it succeeds on the slippery table), the policy only proposes."""
    b = load_bundle(PUSH)
    s = simulate(b, "push", 1, seed=9, noise_std=0.0, real=SLIPPERY, driver="expert")
    assert s.has_proposal.all() and s.terminals[-1]
    ref = np.clip(b.infer(b.manifest.normalize(s.observations)), -1, 1)
    np.testing.assert_allclose(s.proposed_actions, ref, atol=1e-6)
    assert np.mean(np.abs(s.actions - s.proposed_actions)) > 0.05
    with pytest.raises(ValueError, match="driver"):
        simulate(b, "push", 1, seed=9, driver="baseline")


def test_ppo_finetune_starts_from_the_parent_learns_in_the_simulator_and_leaves_the_parent_alone(tmp_path, dataset,
                                                                                                  logged, monkeypatch):
    """--method ppo, a short run with real parts: SB3 PPO on the MuJoCo push env of a profile, the
    parent's ONNX weights as the start, the frozen parent through ONNX Runtime in the loss; it
    leaves no SB3 logger directory (``<tmp>/SB3-<date>``) behind."""
    import tempfile

    from simreal_ros.finetune.finetune import finetune

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    parent = tmp_path / "push_default"
    shutil.copytree(PUSH, parent)
    before = bundle_hash(parent)
    res = finetune(parent, [dataset], tmp_path / "new", method="ppo", randomization="default", timesteps=128,
                   value_warmup=64, n_envs=1, learning_rate=3e-5, progress=False, command="test")
    assert bundle_hash(parent) == before
    assert [p.name for p in tmp.iterdir() if p.name.startswith("SB3-")] == []
    b = load_bundle(tmp_path / "new", load_robot())
    pm, nm = read_manifest(parent)[0].to_dict(), b.manifest.to_dict()
    for key in ("robot", "control_rate_hz", "observation", "action", "default_pose"):
        assert nm[key] == pm[key], key  # the parent's normalization and action semantics, fixed
    prov = nm["provenance"]
    assert prov["parent"]["sha256"] == before and prov["calibration"]["randomization"] == "default"
    assert [d["path"] for d in prov["datasets"]] == [str(dataset.resolve())]
    ft = prov["finetuning"]
    assert ft["algorithm"] == "PPO" and ft["library"].startswith("stable-baselines3")
    assert "read from its ONNX graph" in ft["initialization"] and ft["wall_time_s"] > 0
    hp = ft["hyperparameters"]
    from simreal_ros.finetune.ppo import PPO_FT_DEFAULTS

    assert hp["timesteps"] == 128 and hp["value_warmup"] == 64 and hp["learning_rate"] == 3e-5
    assert hp["ref_weight"] == PPO_FT_DEFAULTS["ref_weight"]  # what was not given: the declared defaults
    assert ft["phases"]["value_warmup"]["timesteps"] == 64 and ft["phases"]["ppo"]["timesteps"] == 64
    assert np.isfinite(ft["phases"]["ppo"]["reference_loss_last"])
    assert "action_statistics" in prov  # for the drift monitor, as simreal train records them
    # the exported model is the PPO actor's mean: near the parent after so few small steps, not equal
    obs = b.manifest.normalize(logged.observations)
    d = np.abs(np.clip(b.infer(obs), -1, 1) - np.clip(load_bundle(parent).infer(obs), -1, 1))
    assert 0 < d.mean() < 0.05 and res["distance_to_parent"]["final"]["mean_abs"] == pytest.approx(d.mean(), abs=1e-4)


def test_ppo_finetune_refuses_what_it_cannot_use(tmp_path, dataset):
    from simreal_ros.finetune.finetune import finetune

    with pytest.raises(DataError, match="learns in the simulator: give --randomization"):
        finetune(PUSH, [dataset], tmp_path / "a", method="ppo", progress=False)
    with pytest.raises(DataError, match="does not take --steps"):
        finetune(PUSH, [dataset], tmp_path / "b", method="ppo", randomization="default", steps=5, progress=False)
    with pytest.raises(DataError, match="--method 'sac'"):
        finetune(PUSH, [dataset], tmp_path / "c", method="sac", progress=False)
    res = _cli("finetune", str(PUSH), "--data", str(dataset), "--out", str(tmp_path / "d"), "--method", "ppo",
               "--randomization", "default", "--critic-warmup", "3")
    assert res.returncode == 2 and "does not take --critic-warmup" in res.stderr and res.stderr.count("\n") == 1
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_the_shielded_training_env_sends_the_shields_command_and_ends_at_its_revert():
    """Targets far ahead of the arm: the deployed shield clips every cycle (penalised), the arm gets the
    clipped command, and the automatic revert ends the episode as a failure."""
    from simreal_ros.finetune.ppo import shielded
    from simreal_ros.training.tasks import task

    env = shielded(task("push").make_env(), 0.5, 5.0)
    free = shielded(task("push").make_env(), 0.0, 0.0)  # the same shield, no penalties: the same trajectory
    base = env.unwrapped
    env.reset(seed=3)
    free.reset(seed=3)
    sent = []
    original = base._unshielded_advance
    base._unshielded_advance = lambda cmd: sent.append(np.array(cmd)) or original(cmd)
    base.reference.step = lambda q, delta: q + 0.5  # half a radian ahead on every joint
    free.unwrapped.reference.step = lambda q, delta: q + 0.5
    rewards, ends = [], None
    for k in range(40):
        _, r, terminated, truncated, info = env.step(np.zeros(2))
        _, r_free, *_ = free.step(np.zeros(2))
        rewards.append(r - r_free)
        if terminated:
            ends = (k, info)
            break
    assert ends is not None and ends[1]["is_success"] is False and ends[1]["reverted"], ends
    assert 8 <= ends[0] < 30  # the shield's revert window (config/shield.yaml: 10 cycles, half of them changed)
    assert all(np.max(np.abs(c - base.measurement.position)) < 0.5 for c in sent[-1:])  # clipped, not q + 0.5
    assert rewards[0] == pytest.approx(-0.5) and rewards[-1] == pytest.approx(-5.5)


def test_fqe_ranks_the_shipped_push_policy_above_a_slower_copy_as_monte_carlo_does(tmp_path):
    """simreal ope's FQE (fqe_start_values, the task's gamma) on 16 logged episodes of the shipped push
    policy with exploration noise (nominal table) values the shipped policy above a copy of it that
    pushes at 35 % of its speed, as the two policies' Monte Carlo returns from the same initial states
    (noiseless rollouts, the task's reward) do. The absolute agreement: bench/bench_ope_mc.py."""
    from simreal_ros.finetune.networks import write_scaled_bundle
    from simreal_ros.finetune.ope import DEFAULTS, discounted_returns, fqe_start_values, task_gamma

    robot = load_robot()
    policies = {"shipped": load_bundle(PUSH, robot),
                "slower": load_bundle(write_scaled_bundle(PUSH, tmp_path / "slower", 0.35), robot)}
    logged = simulate(policies["shipped"], "push", 16, seed=40_000, noise_std=0.3)
    gamma = task_gamma("push")
    assert 0.97 < gamma < 0.98  # 120 steps of 0.1 s: gamma^120 = 0.05
    mc = {k: float(discounted_returns(simulate(b, "push", 16, seed=40_000, noise_std=0.0), gamma).mean())
          for k, b in policies.items()}
    assert mc["shipped"] > mc["slower"] + 3.0, mc
    # a short fit (1500 steps of 128, target every 30: seen 3.3 and -4.1 for true 4.0 and -2.9)
    fqe = {k: float(fqe_start_values(b, logged, n_steps=1500, gamma=gamma, batch_size=128, lr=float(DEFAULTS["fqe_lr"]),
                                     target_update_interval=30, seed=0).mean())
           for k, b in policies.items()}
    assert fqe["shipped"] > fqe["slower"] + 3.0, (fqe, mc)
