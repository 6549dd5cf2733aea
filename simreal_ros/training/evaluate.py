"""``simreal evaluate``: a policy bundle against the baseline controller, nominal and randomized.

Each episode runs sim -> measured state -> executor core (policy) or baseline core ->
shield core -> sim (see :mod:`simreal_ros.training.episodes`). The policy and the baseline
see the same seeds, so the same goals and the same randomization draws. Episodes are spread
over worker processes (``--workers``), or over Ray actors with ``--ray`` (:mod:`simreal_ros.scale`;
the same numbers). Writes ``evaluation.json``, ``evaluation.png`` and, where offscreen
rendering works (``MUJOCO_GL=egl``), ``episode.gif`` of one policy episode.

Exit status: 0 when no episode of either controller violated a limit (sent commands re-checked
against every limit, and the simulated arm's true positions/velocities); 1 when any did (each
condition, controller, limit kind and seed is named); 2 for a bad bundle or argument.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros.cli import standalone_main

CONTROLLERS = ("policy", "baseline")
#: a condition's "profile" that names a hidden real arm/table file instead of a randomization profile
REAL_PREFIX = "real:"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", nargs="?", default=None,
                   help="policy bundle directory (default: the shipped policy of --task)")
    from simreal_ros.training.tasks import TASK_NAMES

    p.add_argument("--task", choices=TASK_NAMES, default=None,
                   help="task (default: the bundle's; without a bundle: reach)")
    p.add_argument("--episodes", type=int, default=100, help="episodes per condition and controller (%(default)s)")
    p.add_argument("--randomization", default="default",
                   help="profile for the randomized condition (config/randomization.yaml; %(default)s)")
    p.add_argument("--real", default=None, metavar="FILE",
                   help="also evaluate on a hidden 'real' arm/table file (simreal_ros/sim/real_arm.py): the "
                        "'real' condition, e.g. to measure the reality gap of direct transfer")
    p.add_argument("--seed", type=int, default=10_000, help="first episode seed (%(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default 2), or Ray actors with --ray (default: the cluster's CPUs)")
    p.add_argument("--out", default="evaluation", help="output directory (%(default)s)")
    p.add_argument("--no-shield", action="store_true", help="send proposals unfiltered (diagnostics only)")
    p.add_argument("--no-render", action="store_true", help="skip the rendered animation")
    from simreal_ros.scale import add_ray_argument

    add_ray_argument(p, "the episodes")


def default_bundle(task_name: str = "reach") -> Path:
    from simreal_ros.resources import resource

    return Path(resource("policies", f"{task_name}_default"))


# ---------------------------------------------------------------------- workers
def make_episode_setup(bundle: str | Path, profile: str, controller: str, render: bool = False):
    """(env, runner) for episodes of ``controller`` under randomization ``profile``, on the task the
    bundle was made for (:func:`simreal_ros.training.tasks.task_of_manifest`)."""
    from simreal_ros.policy.bundle import load_bundle, read_manifest
    from simreal_ros.training.episodes import make_runner
    from simreal_ros.training.tasks import task, task_of_manifest

    spec = task(task_of_manifest(read_manifest(bundle)[0]))
    if profile.startswith(REAL_PREFIX):  # the hidden 'real' condition: exact values, no randomization
        env = spec.make_env(real=profile[len(REAL_PREFIX):], render_mode="rgb_array" if render else None)
    else:
        env = spec.make_env(randomization=profile, render_mode="rgb_array" if render else None)
    robot = env.robot
    loaded = load_bundle(bundle, robot) if controller == "policy" else None
    rate = 1.0 / env.control_period
    if loaded is not None and abs(loaded.manifest.control_rate_hz - rate) > 1e-9:
        raise ValueError(f"bundle control_rate_hz {loaded.manifest.control_rate_hz} differs from the env's {rate}")
    return env, make_runner(controller, robot, rate, loaded, env=env)


def episode_summary(env, runner, seed: int, controller: str, use_shield: bool, render: bool = False) -> dict:
    """One seeded episode's summary with its distance trace (and frames when rendered)."""
    from simreal_ros.training.episodes import run_episode

    res = run_episode(env, runner, seed, use_shield, controller, render=render)
    d = res.summary()
    d["distances"] = res.distances
    if res.frames is not None:
        d["frames"] = res.frames
    return d


def _run_chunk(job: dict[str, Any]) -> list[dict[str, Any]]:
    render = bool(job.get("render"))
    env, runner = make_episode_setup(job["bundle"], job["profile"], job["controller"], render)
    out = [episode_summary(env, runner, seed, job["controller"], not job["no_shield"], render)
           for seed in job["seeds"]]
    env.close()
    return out


def _chunks(seeds: list[int], n: int) -> list[list[int]]:
    return [c for c in (seeds[i::n] for i in range(n)) if c]


def run_episodes(bundle: Path, profile: str, controller: str, seeds: list[int], workers: int,
                 no_shield: bool = False) -> list[dict[str, Any]]:
    """Episode summaries (seed order) for one condition and controller."""
    jobs = [{"bundle": str(bundle), "profile": profile, "controller": controller, "seeds": c, "no_shield": no_shield}
            for c in _chunks(seeds, max(1, workers))]
    if workers <= 1 or len(jobs) == 1:
        results = [_run_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_run_chunk, jobs))
    flat = [r for chunk in results for r in chunk]
    return sorted(flat, key=lambda r: r["seed"])


def aggregate(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate, final distance, time to target, smoothness, interventions, violations."""
    succ = np.array([e["success"] for e in episodes], dtype=float)
    fd = np.array([e["final_distance"] for e in episodes])
    ttt = np.array([e["time_to_target"] for e in episodes])
    ttt = ttt[np.isfinite(ttt)]
    kinds: dict[str, int] = {}
    viol_kinds: dict[str, int] = {}
    for e in episodes:
        for k, v in e["shield_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
        for k, v in e["violation_kinds"].items():
            viol_kinds[k] = viol_kinds.get(k, 0) + v
    return {
        "episodes": len(episodes),
        "success_rate": float(succ.mean()) if len(succ) else math.nan,
        # an episode the shield reverted to the baseline is the policy's failure, whatever the baseline did
        "success_rate_own": (float(np.mean([bool(e["success"]) and e["reverted"] is None for e in episodes]))
                             if episodes else math.nan),
        "final_distance_mean_m": float(fd.mean()),
        "final_distance_median_m": float(np.median(fd)),
        "final_distance_p95_m": float(np.percentile(fd, 95)),
        "time_to_target_median_s": float(np.median(ttt)) if len(ttt) else None,
        "time_to_target_mean_s": float(ttt.mean()) if len(ttt) else None,
        "command_jerk_rms_mean": float(np.mean([e["command_jerk_rms"] for e in episodes])),
        "command_accel_rms_mean": float(np.mean([e["command_accel_rms"] for e in episodes])),
        "shield_interventions_total": int(sum(e["shield_interventions"] for e in episodes)),
        "shield_interventions_per_episode": float(np.mean([e["shield_interventions"] for e in episodes])),
        "shield_interventions_per_100_commands": float(100.0 * sum(e["shield_interventions"] for e in episodes)
                                                       / max(1, sum(e.get("commands", 0) for e in episodes))),
        "episodes_with_interventions": int(sum(e["shield_interventions"] > 0 for e in episodes)),
        "shield_intervention_kinds": kinds,
        "limit_violations": int(sum(e["limit_violations"] for e in episodes)),
        "limit_violation_kinds": viol_kinds,
        "seeds_with_violations": [e["seed"] for e in episodes if e["limit_violations"]],
        "cycles_not_driven_by_policy": int(sum(e["reverts"] for e in episodes)),
        "episodes_reverted": int(sum(e["reverted"] is not None for e in episodes)),
    }


def evaluate(bundle: str | Path | None = None, episodes: int = 100, randomization: str = "default",
             seed: int = 10_000, workers: int | None = 2, out: str | Path | None = "evaluation",
             no_shield: bool = False, render: bool = True, progress: bool = True,
             ray: str | None = None, task_name: str | None = None, real: str | Path | None = None) -> dict[str, Any]:
    """Run the comparison; returns the report (also written to ``out`` when given).

    ``ray``: a Ray address (see :mod:`simreal_ros.scale`); every episode of every condition and
    controller then runs as a task on ``workers`` actors (default: the cluster's CPUs), with the
    same seeds and so the same numbers as the local worker processes.
    """
    from tqdm import tqdm

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    bundle = Path(bundle) if bundle else default_bundle(task_name or "reach")
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.training.tasks import task, task_of_manifest

    manifest = load_bundle(bundle, load_model=False).manifest  # fail early on a bad bundle
    bundle_task = task_of_manifest(manifest)
    if task_name is not None and task_name != bundle_task:
        raise ValueError(f"bundle '{manifest.name}' ({bundle}) is a {bundle_task} policy, not a {task_name} one")
    probe = task(bundle_task).make_env()
    success_radius = probe.task.success_radius if bundle_task == "push" else probe.success_radius
    probe.close()
    seeds = list(range(seed, seed + episodes))
    conditions = [("nominal", "nominal"), ("randomized", randomization)]
    if real is not None:
        from simreal_ros.robot import load_robot
        from simreal_ros.sim.real_arm import load_real_arm

        load_real_arm(real, load_robot())  # a bad file is one line before anything runs
        conditions.append(("real", f"{REAL_PREFIX}{Path(real).resolve()}"))
    report: dict[str, Any] = {"bundle": str(bundle), "policy": manifest.name, "task": bundle_task,
                              "success_radius_m": success_radius, "episodes": episodes,
                              "seeds": [seeds[0], seeds[-1]], "shield": not no_shield, "conditions": {}}
    traces: dict[str, dict[str, list[list[float]]]] = {}
    t0 = time.monotonic()
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    on_ray: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if ray is not None:
        from simreal_ros.scale import connect
        from simreal_ros.scale.episodes import run_on_ray

        connect(ray, num_cpus=workers)  # before the progress bar: an unreachable cluster is one line
        bar = tqdm(total=2 * len(conditions) * episodes, desc="simreal evaluate (ray)", unit="episode",
                   disable=not progress)
        requests = [(profile, ctl, s) for _, profile in conditions for ctl in CONTROLLERS for s in seeds]
        for req, res in zip(requests, run_on_ray(ray, bundle, requests, no_shield, workers, bar.update)):
            on_ray.setdefault(req[:2], []).append(res)
        bar.close()
    bar = tqdm(total=2 * len(conditions), desc="simreal evaluate", unit="run", disable=not progress or on_ray)
    for cname, profile in conditions:
        report["conditions"][cname] = {"randomization": profile}
        traces[cname] = {}
        for ctl in CONTROLLERS:
            eps = on_ray[(profile, ctl)] if on_ray else run_episodes(bundle, profile, ctl, seeds, workers or 2,
                                                                     no_shield)
            traces[cname][ctl] = [e.pop("distances") for e in eps]
            report["conditions"][cname][ctl] = aggregate(eps)
            report["conditions"][cname][f"{ctl}_failed_seeds"] = [e["seed"] for e in eps if not e["success"]]
            bar.update(1)
    bar.close()
    if real is not None:
        report["prediction"] = prediction(report)
    report["wall_time_s"] = round(time.monotonic() - t0, 1)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(report, indent=2))
        from simreal_ros.training.plots import plot_runs, render_episode

        plot_runs(traces, report, out / "evaluation.png", control_period=1.0 / manifest.control_rate_hz,
                  success_radius=success_radius,
                  ylabel="puck distance to goal (m)" if bundle_task == "push" else "flange distance to goal (m)")
        report["files"] = {"json": str(out / "evaluation.json"), "plot": str(out / "evaluation.png")}
        if render:
            gif = render_episode(bundle, randomization, seed, out / "episode.gif", fps=manifest.control_rate_hz)
            if gif is not None:
                report["files"]["animation"] = str(gif)
        (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    return report


def prediction(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """How well the simulated conditions predict success on the hidden real arm, per controller:
    ``predicted`` (the success rate on the ``--randomization`` profile, e.g. a calibration's),
    ``actual`` (on the real arm, the same seeds), ``difference_pp`` (predicted - actual, percentage
    points) and the nominal model's ``nominal`` / ``nominal_difference_pp`` beside them. With N
    episodes a success rate's standard error is up to 50/sqrt(N) points (5 at N = 100)."""
    cond = report["conditions"]
    out = {}
    for ctl in CONTROLLERS:
        actual = cond["real"][ctl]["success_rate"]
        predicted, nominal = cond["randomized"][ctl]["success_rate"], cond["nominal"][ctl]["success_rate"]
        out[ctl] = {"profile": cond["randomized"]["randomization"], "predicted": predicted, "actual": actual,
                    "difference_pp": round(100.0 * (predicted - actual), 2), "nominal": nominal,
                    "nominal_difference_pp": round(100.0 * (nominal - actual), 2)}
    return out


def record_in_manifest(bundle: str | Path, episodes: int = 100, seed: int = 10_000, workers: int | None = 2,
                       ray: str | None = None) -> dict:
    """Evaluate ``bundle`` and store the summary in its manifest's ``provenance.evaluation``."""
    import yaml

    from simreal_ros.policy.bundle import MANIFEST_FILE, PolicyManifest, read_manifest

    report = evaluate(bundle, episodes=episodes, seed=seed, workers=workers, out=None, render=False, ray=ray)
    manifest, directory = read_manifest(bundle)
    summary = {"command": f"simreal evaluate {bundle} --episodes {episodes} --seed {seed}",
               "episodes": episodes, "seeds": report["seeds"], "shield": True}
    for cname, cond in report["conditions"].items():
        summary[cname] = {"randomization": cond["randomization"],
                          **{ctl: {k: cond[ctl][k] for k in ("success_rate", "final_distance_median_m",
                                                              "time_to_target_median_s", "command_jerk_rms_mean",
                                                              "shield_interventions_per_episode",
                                                              "shield_interventions_per_100_commands",
                                                              "limit_violations", "episodes_reverted")}
                             for ctl in CONTROLLERS}}
    manifest.provenance = {**manifest.provenance, "evaluation": summary}
    PolicyManifest.from_dict(manifest.to_dict())  # still valid
    (directory / MANIFEST_FILE).write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, width=120))
    return summary


def _print_table(report: dict[str, Any]) -> None:
    rows = [("success rate", "success_rate", "{:.1%}"), ("  of it before any revert", "success_rate_own", "{:.1%}"),
            ("final dist median (mm)", "final_distance_median_m", "mm"),
            ("time to target median (s)", "time_to_target_median_s", "{:.2f}"),
            ("command jerk RMS (rad/s^3)", "command_jerk_rms_mean", "{:.1f}"),
            ("shield interventions/episode", "shield_interventions_per_episode", "{:.2f}"),
            ("interventions/100 commands", "shield_interventions_per_100_commands", "{:.2f}"),
            ("limit violations", "limit_violations", "{}"), ("episodes reverted", "episodes_reverted", "{}")]
    for cname, cond in report["conditions"].items():
        print(f"\n{cname} ({cond['randomization']}), {report['episodes']} episodes")
        print(f"  {'':30s}{'policy':>12s}{'baseline':>12s}")
        for label, key, fmt in rows:
            vals = []
            for ctl in CONTROLLERS:
                v = cond[ctl].get(key)  # None: a report written before the row existed
                vals.append("-" if v is None else (f"{v * 1e3:.1f}" if fmt == "mm" else fmt.format(v)))
            print(f"  {label:30s}{vals[0]:>12s}{vals[1]:>12s}")
    pred = report.get("prediction")
    if pred:  # the 'prediction' row: success on the real arm as the randomized and the nominal sims predict it
        print(f"\nprediction of the real arm's success ({pred['policy']['profile']} vs real, same seeds)")
        print(f"  {'':30s}{'policy':>12s}{'baseline':>12s}")
        for label, fmt in (("predicted (randomized)", lambda p: f"{p['predicted']:.1%}"),
                           ("actual (real)", lambda p: f"{p['actual']:.1%}"),
                           ("difference (pp)", lambda p: f"{p['difference_pp']:+.1f}"),
                           ("nominal predicts", lambda p: f"{p['nominal']:.1%}"),
                           ("nominal difference (pp)", lambda p: f"{p['nominal_difference_pp']:+.1f}")):
            print(f"  {label:30s}{fmt(pred['policy']):>12s}{fmt(pred['baseline']):>12s}")


def limit_violations(report: dict[str, Any]) -> list[str]:
    """One line per condition and controller that violated a limit: count, kinds, seeds (empty: none)."""
    lines = []
    for cname, cond in report["conditions"].items():
        for ctl in CONTROLLERS:
            agg = cond[ctl]
            if not agg["limit_violations"]:
                continue
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(agg.get("limit_violation_kinds", {}).items()))
            seeds = agg.get("seeds_with_violations", [])
            shown = ", ".join(str(s) for s in seeds[:10]) + (f", ... ({len(seeds)} episodes)" if len(seeds) > 10 else "")
            lines.append(f"{cname} ({cond['randomization']}) {ctl}: {agg['limit_violations']} limit violations "
                         f"({kinds or 'kinds not recorded'}) in seeds {shown or '?'}")
    return lines


def exit_status(report: dict[str, Any]) -> int:
    """0 when no limit was violated in any episode, 1 otherwise (see the module docstring)."""
    return 1 if limit_violations(report) else 0


def run(args: argparse.Namespace) -> int:
    from simreal_ros.policy.bundle import BundleError
    from simreal_ros.scale import RayUnavailableError

    if "mujoco" not in sys.modules:
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        report = evaluate(args.bundle, episodes=args.episodes, randomization=args.randomization, seed=args.seed,
                          workers=args.workers, out=args.out, no_shield=args.no_shield, render=not args.no_render,
                          ray=args.ray, task_name=args.task, real=args.real)
    except (BundleError, ValueError, RayUnavailableError) as exc:  # a bad bundle, profile or argument: one line, no traceback
        print(f"simreal evaluate: error: {exc}", file=sys.stderr)
        return 2
    _print_table(report)
    print(f"\nwritten: {', '.join(report.get('files', {}).values())}")
    lines = limit_violations(report)
    if lines:
        shield = "through the shield" if report["shield"] else "without the shield (--no-shield)"
        print(f"\nFAIL: limits violated {shield}:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
    return exit_status(report)


def main(argv: list[str] | None = None) -> int:
    return standalone_main("evaluate", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
