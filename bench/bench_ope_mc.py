"""FQE (``simreal ope``) against Monte Carlo returns of the evaluated policies, in the same run.

Logged data: ``--episodes`` episodes of the shipped push policy with Gaussian exploration noise
(``--noise``) on the nominal table (:func:`simreal_ros.finetune.data.simulate`, the tests' stand-in
for a recorded session), episode ``k`` from seed ``--seed + k``. Evaluated: (a) the shipped push
policy and (b) a deliberately worse one, the same network with its output layer scaled by
``--worse-scale`` (it pushes that much slower, so it pays the distance terms for longer and its
success bonus comes later, or not at all). Truth: each policy's own noiseless rollout from the same
initial states (the same seeds), its discounted return with the task's reward
(:mod:`simreal_ros.sim.rewards`, what the env and the dataset builder pay), truncated where the env
ends the episode. FQE: :func:`simreal_ros.finetune.ope.fqe_start_values`, exactly what ``simreal
ope`` runs, for each configuration of ``--configs`` (``steps:target_update_interval:gamma[:lr]``;
gamma ``task`` = :func:`simreal_ros.finetune.ope.task_gamma`).

Per configuration and policy: the mean FQE value of the episodes' first states against the mean
Monte Carlo return, their difference, the per-episode RMSE and correlation, whether FQE ranks the
two policies as the returns do, and the fit's wall time. Prints one JSON object as its last line.

    python bench/bench_ope_mc.py                    # defaults: 30 episodes, noise 0.3, scale 0.35
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_config(item: str, defaults: dict) -> tuple[int, int, str, float]:
    """``steps:target_update_interval:gamma[:learning_rate]``, or ``default`` (simreal ope's)."""
    if item == "default":
        return (int(defaults["fqe_steps"]), int(defaults["target_update_interval"]), str(defaults["gamma"]),
                float(defaults["fqe_lr"]))  # gamma None: the task's
    parts = item.split(":")
    lr = float(parts[3]) if len(parts) > 3 else float(defaults["fqe_lr"])
    return int(parts[0]), int(parts[1]), parts[2], lr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--worse-scale", type=float, default=0.35)
    p.add_argument("--seed", type=int, default=40_000)
    p.add_argument("--configs", default="2000:100:0.99:1e-4,default",
                   help="steps:target_update:gamma[:lr],... or 'default' (simreal ope's defaults); the first is the "
                        "defaults before the validation (%(default)s)")
    p.add_argument("--fit-seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from simreal_ros.finetune.data import simulate
    from simreal_ros.finetune.networks import write_scaled_bundle
    from simreal_ros.finetune.ope import DEFAULTS, discounted_returns, fqe_start_values, task_gamma
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.resources import resource
    from simreal_ros.robot import load_robot

    robot = load_robot()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ope_mc_"))
    good_dir = resource("policies", "push_default")
    bad_dir = write_scaled_bundle(good_dir, tmp / "worse", args.worse_scale)
    policies = {"shipped": load_bundle(good_dir, robot), "worse": load_bundle(bad_dir, robot)}
    t0 = time.perf_counter()
    logged = simulate(policies["shipped"], "push", args.episodes, args.seed, noise_std=args.noise)
    collect_s = time.perf_counter() - t0
    rollouts = {k: simulate(b, "push", args.episodes, args.seed, noise_std=0.0) for k, b in policies.items()}
    for r in rollouts.values():  # the same initial states as the logged episodes
        firsts = [a for a, _ in r.episode_bounds]
        assert np.allclose(r.observations[firsts][:, :7], logged.observations[[a for a, _ in logged.episode_bounds]][:, :7])
    success = {k: int(r.terminals.sum()) for k, r in rollouts.items()}
    steps_per_episode = {k: float(len(r) / len(r.episode_bounds)) for k, r in rollouts.items()}
    configs = [parse_config(item, DEFAULTS) for item in args.configs.split(",")]
    results = []
    for n_steps, tui, g, lr in configs:
        gamma = task_gamma("push") if g in ("task", "None") else float(g)
        mc = {k: discounted_returns(r, gamma) for k, r in rollouts.items()}
        row = {"fqe_steps": n_steps, "target_update_interval": tui, "gamma": round(gamma, 5), "learning_rate": lr,
               "policies": {}}
        fqe = {}
        for k, b in policies.items():
            t = time.perf_counter()
            v = fqe_start_values(b, logged, n_steps=n_steps, gamma=gamma, batch_size=int(DEFAULTS["batch_size"]),
                                 lr=lr, target_update_interval=tui, seed=args.fit_seed)
            fqe[k] = v
            err = v - mc[k]
            row["policies"][k] = {
                "fqe_mean": float(v.mean()), "mc_mean": float(mc[k].mean()), "bias": float(err.mean()),
                "relative_bias": float(err.mean() / abs(mc[k].mean())) if mc[k].mean() else None,
                "episode_rmse": float(np.sqrt(np.mean(err ** 2))),
                "episode_corr": float(np.corrcoef(v, mc[k])[0, 1]) if np.std(v) > 0 and np.std(mc[k]) > 0 else None,
                "fit_wall_s": round(time.perf_counter() - t, 1)}
        row["mc_difference"] = float(mc["shipped"].mean() - mc["worse"].mean())
        row["fqe_difference"] = float(fqe["shipped"].mean() - fqe["worse"].mean())
        row["ranks_correctly"] = bool(np.sign(row["mc_difference"]) == np.sign(row["fqe_difference"]))
        results.append(row)
        print(json.dumps(row))
    shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(json.dumps({"episodes": args.episodes, "noise_std": args.noise, "worse_scale": args.worse_scale,
                      "logged_transitions": len(logged), "collect_wall_s": round(collect_s, 1),
                      "mc_successes": success, "mc_steps_per_episode": steps_per_episode, "max_steps": 120,
                      "load_avg_1min": load, "results": results}))


if __name__ == "__main__":
    main()
