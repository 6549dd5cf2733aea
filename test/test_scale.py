"""Scale-out on Ray (``--ray``): a real two-worker Ray instance on 127.0.0.1, started once for the
module inside the test's loopback-only namespace. Evaluation episodes and training rollouts run
in its actors and give exactly the numbers of the local run for the same seeds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("ray")

from simreal_ros.scale import LOCAL, cluster_cpus, connect  # noqa: E402
from simreal_ros.training.evaluate import evaluate  # noqa: E402

WORKERS = 2


@pytest.fixture(scope="module")
def ray_cluster():
    ray = connect(LOCAL, num_cpus=WORKERS)
    yield ray
    ray.shutdown()


def test_local_instance_is_two_workers_on_loopback(ray_cluster):
    ray = ray_cluster
    assert cluster_cpus(ray) == WORKERS
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")

    @ray.remote(num_cpus=1)
    def where() -> tuple[int, str]:
        import time

        time.sleep(0.3)  # both run at once, so on two worker processes
        return os.getpid(), ray.util.get_node_ip_address()

    got = ray.get([where.remote() for _ in range(WORKERS)])
    assert len({pid for pid, _ in got}) == WORKERS and os.getpid() not in {pid for pid, _ in got}
    assert {ip for _, ip in got} == {"127.0.0.1"}


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "wall_time_s"}


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_evaluate_on_ray_equals_the_local_run(ray_cluster, tmp_path):
    """Same seeds -> identical reports (every aggregate, every failed seed), and identical
    per-episode numbers including each episode's distance trace."""
    kw = dict(episodes=3, seed=10_000, out=None, render=False, progress=False)
    local = evaluate(None, workers=1, **kw)
    remote = evaluate(None, workers=None, ray="auto", **kw)  # joins the running instance
    assert _strip(remote) == _strip(local), _differences(_strip(local), _strip(remote))
    assert local["conditions"]["randomized"]["policy"]["episodes"] == 3

    from simreal_ros.scale.episodes import run_on_ray
    from simreal_ros.training.evaluate import default_bundle, run_episodes

    seeds = [10_003, 10_004, 10_005]
    here = run_episodes(default_bundle(), "default", "policy", seeds, workers=2)
    there = run_on_ray(LOCAL, default_bundle(), [("default", "policy", s) for s in seeds])
    assert there == here
    assert all(len(e["distances"]) > 10 for e in there)


def test_files_a_condition_names_travel_with_the_actors(ray_cluster, tmp_path):
    """A hidden 'real' arm file (``--real``) is shipped to the actors, which run on their own
    copies (a calibration file given as ``--randomization`` takes the same path): the cluster
    needs no shared filesystem. The numbers still equal the local run's."""
    import shutil
    from pathlib import Path

    from simreal_ros.scale.episodes import EpisodeWorker, bundle_files, profile_files
    from simreal_ros.training.evaluate import REAL_PREFIX, default_bundle

    real = tmp_path / "arm.yaml"
    shutil.copy(Path(__file__).parent / "data" / "hidden_arm.yaml", real)
    profiles = [f"{REAL_PREFIX}{real}", "default"]
    data = profile_files(profiles)
    assert set(data) == {profiles[0]}  # a named profile of config/randomization.yaml is not a file
    worker = EpisodeWorker(bundle_files(default_bundle()), False, data)
    try:
        local = worker.local_profile(profiles[0])
        assert local.startswith(REAL_PREFIX) and local != profiles[0]
        copy = Path(local[len(REAL_PREFIX):])
        assert copy.read_bytes() == real.read_bytes() and not copy.is_relative_to(tmp_path)
        assert worker.local_profile("default") == "default"
    finally:
        worker.close()

    kw = dict(episodes=2, seed=10_020, out=None, render=False, progress=False, real=real)
    here = evaluate(None, workers=1, **kw)
    there = evaluate(None, workers=None, ray=LOCAL, **kw)
    assert "real" in here["conditions"]
    assert _strip(there) == _strip(here), _differences(_strip(here), _strip(there))


def test_evaluate_cli_with_ray_writes_the_same_report(ray_cluster, tmp_path):
    from simreal_ros.cli import main

    args = ["evaluate", "--episodes", "2", "--no-render", "--seed", "10010"]
    assert main([*args, "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--ray", "--out", str(tmp_path / "ray")]) == 0
    a, b = (json.loads((tmp_path / d / "evaluation.json").read_text()) for d in ("local", "ray"))
    assert _strip(a)["conditions"] == _strip(b)["conditions"]


def _weights(bundle) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle / "policy.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_train_on_ray_gives_the_same_policy_as_locally(ray_cluster, tmp_path):
    """A tiny PPO run with 3 envs in 2 Ray actors (groups of 2 and 1) trains exactly the policy
    the local DummyVecEnv run trains: same ONNX weights, same normalisation statistics."""
    pytest.importorskip("stable_baselines3")
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.robot import load_robot
    from simreal_ros.training.train import main

    argv = ["--timesteps", "192", "--n-envs", "3", "--net", "16,16", "--seed", "5", "--stats-episodes", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert main([*argv, "--ray", "--out", str(tmp_path / "ray")]) == 0
    wl, wr = _weights(tmp_path / "local"), _weights(tmp_path / "ray")
    assert wl.keys() == wr.keys() and len(wl) >= 6
    for name in wl:
        np.testing.assert_array_equal(wl[name], wr[name], err_msg=name)
    ml, mr = (load_bundle(tmp_path / d, load_robot(), load_model=False).manifest for d in ("local", "ray"))
    np.testing.assert_array_equal(ml.obs_mean, mr.obs_mean)
    np.testing.assert_array_equal(ml.obs_std, mr.obs_std)
    # the statistics moved away from their initial values: the envs really ran
    assert np.any(np.asarray(ml.obs_mean) != 0.0)


def test_unreachable_cluster_is_one_line_and_exit_2(tmp_path):
    """A cluster address that does not answer: exit status 2, one error line (run in its own
    process: this one is already connected to the module's instance)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "simreal_ros.cli", "evaluate", "--episodes", "1", "--no-render",
                           "--ray", "127.0.0.1:9", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("simreal evaluate: error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_calibration_fit_on_ray_gives_the_same_estimates(ray_cluster):
    """`simreal calibrate fit --ray`: every Gauss-Newton step's rollouts run as Ray tasks; the
    estimates, their intervals and the objective equal the local fit's (two short iterations)."""
    pytest.importorskip("scipy")
    from simreal_ros.calibrate import FitConfig, fit
    from simreal_ros.calibrate.simsession import HiddenArm, hidden_arm_sim, record_session
    from simreal_ros.estimator.excitation import ExcitationTrajectory
    from simreal_ros.robot import load_robot

    robot = load_robot()
    hidden = HiddenArm(friction=(1.5, 1.5, 1.2, 1.2, 0.6, 0.6, 0.0), payload_mass=1.5, action_latency=0.010)
    session = record_session(hidden_arm_sim(hidden, robot, seed=1), 8.0,
                             ExcitationTrajectory(robot, joints=np.ones(7, bool), seed=3), name="ray_fit")
    cfg = FitConfig(parameters=("friction", "latency"), chunk_duration=3.0, stage1_iters=2, max_iters=2, belief=False)
    here = fit([session], cfg, robot, progress=False)
    there = fit([session], cfg, robot, progress=False, ray=LOCAL)
    print(f"fit wall time: local {here.stats['wall_time_s']:.1f} s, ray {there.stats['wall_time_s']:.1f} s")
    assert there.stats["rollouts"] == here.stats["rollouts"] > 20
    assert there.stats["objective_end"] == here.stats["objective_end"] < here.stats["objective_start"]
    assert here.estimates.keys() == there.estimates.keys()
    for name, e in here.estimates.items():
        np.testing.assert_array_equal(np.asarray(e.value, float), np.asarray(there.estimates[name].value, float),
                                      err_msg=name)
        np.testing.assert_array_equal(np.asarray(e.std, float), np.asarray(there.estimates[name].std, float),
                                      err_msg=name)
