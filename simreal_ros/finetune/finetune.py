"""``simreal finetune BUNDLE --data DS [DS ...] [--randomization CAL] --out NEW``: improve a policy
from logged sessions (and the calibrated simulator), staying close to the frozen original.

The method (``--method``):

* ``td3bc`` (default): offline TD3+BC with d3rlpy on the logged (and, with ``--randomization``,
  simulated) transitions, the actor from the bundle's own weights and held to the frozen original
  (:mod:`simreal_ros.finetune.td3bc`);
* ``ppo``: online PPO with stable-baselines3 in the ``--randomization`` simulator from the parent's
  weights (:mod:`simreal_ros.finetune.ppo`);
* ``--from-exploration``: SAC from an exploration family's data (:mod:`simreal_ros.finetune.explore`).

This module checks the inputs (the parent, ``--out``, the logged data against the parent), dispatches
to the method and exports the result: the same manifest (observation terms and normalization,
action type/scale/clip/planar and any other action keys) with the new model and a provenance naming
the parent (name, sha256 of its files), the datasets, the calibration, the method, the
hyper-parameters and the wall time.

The parent bundle is only read (its files' hash is checked after the run); ``--out`` must be a new
or empty directory outside it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simreal_ros.cli import standalone_main
from simreal_ros.finetune.data import DataError, Steps
from simreal_ros.finetune.td3bc import DEFAULTS, finetune_td3bc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="the policy bundle to improve (only read)")
    p.add_argument("--data", nargs="+", required=True, metavar="DS", help="datasets written by `simreal dataset`")
    p.add_argument("--out", required=True, help="new bundle directory (new or empty; not inside BUNDLE)")
    p.add_argument("--name", default=None, help="policy name in the new manifest (default: <parent>_ft)")
    p.add_argument("--method", choices=METHODS, default="td3bc",
                   help="td3bc: offline TD3+BC (d3rlpy) on the logged (and simulated) transitions; ppo: online PPO "
                        "(stable-baselines3) in the --randomization simulator from the parent's weights, held to "
                        "the parent on the rollout's and the logged states (default: %(default)s)")
    p.add_argument("--randomization", default=None, metavar="PROFILE|CAL",
                   help="td3bc: also learn from episodes simulated with this randomization profile or calibration "
                        "file; ppo: the simulator to learn in (required)")
    p.add_argument("--sim-episodes", type=int, default=DEFAULTS["sim_episodes"],
                   help="simulated episodes with --randomization (%(default)s)")
    p.add_argument("--sim-noise", type=float, default=DEFAULTS["sim_noise"],
                   help="std of the exploration noise added to the original's actions in simulation (%(default)s)")
    p.add_argument("--sim-ratio", type=float, default=DEFAULTS["sim_ratio"],
                   help="share of each batch drawn from the simulated transitions (%(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="gradient steps in all (%(default)s)")
    p.add_argument("--critic-warmup", type=int, default=DEFAULTS["critic_warmup"],
                   help="first steps that train only the critics (%(default)s)")
    p.add_argument("--distill-steps", type=int, default=DEFAULTS["distill_steps"],
                   help="steps fitting the tanh actor to the original before TD3+BC (%(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--actor-lr", type=float, default=DEFAULTS["actor_lr"], help="(%(default)s)")
    p.add_argument("--critic-lr", type=float, default=DEFAULTS["critic_lr"], help="(%(default)s)")
    p.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                   help="TD3+BC's alpha: weight of the Q term against the behaviour cloning term (%(default)s)")
    p.add_argument("--ref-weight", type=float, default=None,
                   help=f"weight of the squared distance to the frozen original's actions ({DEFAULTS['ref_weight']})")
    p.add_argument("--gamma", type=float, default=None, help=f"discount ({DEFAULTS['gamma']})")
    from simreal_ros.finetune.ppo import PPO_FT_DEFAULTS as PPO

    g = p.add_argument_group(f"--method ppo (defaults: simreal_ros.finetune.ppo.PPO_FT_DEFAULTS; --ref-weight and "
                             f"--gamma apply too, --ref-weight's default is then {PPO['ref_weight']})")
    g.add_argument("--timesteps", type=int, default=None, help=f"environment steps in all ({PPO['timesteps']})")
    g.add_argument("--value-warmup", type=int, default=None,
                   help=f"first environment steps that train only the value net, the actor frozen "
                        f"({PPO['value_warmup']})")
    g.add_argument("--learning-rate", type=float, default=None, help=f"PPO's learning rate ({PPO['learning_rate']})")
    g.add_argument("--n-envs", type=int, default=None, help=f"parallel environments ({PPO['n_envs']})")
    g.add_argument("--log-std-init", type=float, default=None,
                   help="log std of the exploration noise: --method ppo's, and --from-exploration's after "
                        f"--pretrain-steps ({PPO['log_std_init']})")
    g.add_argument("--intervention-penalty", type=float, default=None,
                   help=f"reward lost per cycle the shield changed the command ({PPO['intervention_penalty']})")
    g.add_argument("--revert-penalty", type=float, default=None,
                   help=f"reward lost when the shield reverts to the baseline, which ends the episode "
                        f"({PPO['revert_penalty']})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from simreal_ros.finetune import explore  # --from-exploration (issue 14): SAC from the exploration data

    explore.add_arguments(p)


def check_out(out: Path, bundle_dir: Path) -> None:
    """``out`` must not be the bundle, lie inside it, or hold anything already."""
    o, b = out.resolve(), bundle_dir.resolve()
    if o == b or o.is_relative_to(b):
        raise DataError(f"--out {out} is the bundle {bundle_dir} or inside it: the original is never modified; "
                        "give a new directory")
    if o.exists() and (not o.is_dir() or any(o.iterdir())):
        raise DataError(f"--out {out} exists and is not an empty directory (a bundle is never overwritten)")


def _inputs(bundle: str | Path, data: list[str | Path] | Steps, out: str | Path):
    """The parent (loaded, hashed), ``out`` checked, the logged transitions checked against it."""
    from simreal_ros.finetune.data import bundle_hash, load_logged
    from simreal_ros.policy.bundle import BundleError, load_bundle
    from simreal_ros.robot import load_robot
    from simreal_ros.training.tasks import task_of_manifest

    bundle_dir = Path(bundle)
    try:
        parent = load_bundle(bundle_dir, load_robot())
    except BundleError as exc:
        raise DataError(str(exc)) from None
    check_out(Path(out), bundle_dir)
    task_name = task_of_manifest(parent.manifest)
    if isinstance(data, Steps):  # transitions in memory (the loop's own, or simulated ones)
        logged, datasets = data, [{"in_memory": True, "transitions": len(data),
                                   "episodes": len(data.episode_bounds)}]
        if not len(data):
            raise DataError("the transitions given have no rows")
    else:
        logged, datasets = load_logged(data, parent.manifest, task_name)
    return bundle_dir, parent, bundle_hash(bundle_dir), task_name, logged, datasets


def _write_bundle(parent, bundle_dir: Path, parent_hash: str, out: Path, name: str | None, provenance: dict,
                  export: Any) -> Any:
    """The parent's manifest with the new model (``export(path)`` writes its ONNX file) and ``provenance``."""
    from simreal_ros.finetune.data import bundle_hash
    from simreal_ros.policy.bundle import PolicyManifest, save_bundle

    d = parent.manifest.to_dict()
    d["name"] = name or f"{parent.manifest.name}_ft"
    d["model"] = {"file": "policy.onnx", "backend": "onnx"}
    d["provenance"] = provenance
    manifest = PolicyManifest.from_dict(d)
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(out, manifest, export(Path(tmp) / "policy.onnx"))
    if bundle_hash(bundle_dir) != parent_hash:  # cannot happen by this code; checked all the same
        raise RuntimeError(f"the parent bundle {bundle_dir} changed during fine-tuning")
    return manifest


METHODS = ("td3bc", "ppo")


def finetune(bundle: str | Path, data: list[str | Path] | Steps, out: str | Path, *, randomization: str | None = None,
             name: str | None = None, seed: int = 0, progress: bool = True, command: str | None = None,
             method: str = "td3bc", **overrides: Any) -> dict[str, Any]:
    """Fine-tune ``bundle`` on the datasets ``data``; write the new bundle to ``out``; return a summary.

    ``method``: ``td3bc`` (offline, d3rlpy; the settings of :data:`DEFAULTS`) or ``ppo`` (online in the
    ``randomization`` simulator, SB3; :data:`simreal_ros.finetune.ppo.PPO_FT_DEFAULTS`)."""
    if method not in METHODS:
        raise DataError(f"--method {method!r}; known: {', '.join(METHODS)}")
    if method == "ppo":
        return _finetune_ppo(bundle, data, out, randomization=randomization, name=name, seed=seed, progress=progress,
                             command=command, **overrides)
    return finetune_td3bc(bundle, data, out, randomization=randomization, name=name, seed=seed, progress=progress,
                          command=command, **overrides)


def _finetune_ppo(bundle: str | Path, data: list[str | Path] | Steps, out: str | Path, *, randomization: str | None,
                  name: str | None, seed: int, progress: bool, command: str | None, **overrides: Any
                  ) -> dict[str, Any]:
    """``--method ppo`` (:mod:`simreal_ros.finetune.ppo`): the same inputs, outputs and guarantees as TD3+BC."""
    from simreal_ros.finetune.ppo import PPO_FT_DEFAULTS

    unknown = sorted(k for k, v in overrides.items() if v is not None and k not in PPO_FT_DEFAULTS)
    if unknown:
        raise DataError(f"--method ppo does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}")
    hp = {**PPO_FT_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("timesteps", "n_envs"):
        if int(hp[key]) < 1:
            raise DataError(f"--{key.replace('_', '-')} must be >= 1, got {hp[key]}")
    if int(hp["value_warmup"]) < 0 or not hp["learning_rate"] > 0 or not hp["ref_weight"] >= 0 \
            or not hp["intervention_penalty"] >= 0 or not hp["revert_penalty"] >= 0 \
            or not 0 < hp["gamma"] < 1:
        raise DataError("--value-warmup, --ref-weight and the penalties must be >= 0, --learning-rate > 0, --gamma in "
                        "(0, 1)")
    if randomization is None:
        raise DataError("--method ppo learns in the simulator: give --randomization CAL (the calibration.yaml of "
                        "simreal calibrate fit, or a profile)")
    t_start = time.monotonic()
    out = Path(out)
    bundle_dir, parent, parent_hash, task_name, logged, datasets = _inputs(bundle, data, out)
    from simreal_ros.sim.randomize import load_ranges

    load_ranges(profile=randomization)  # a bad profile or file: one line before anything runs
    import torch
    from tqdm import tqdm

    from simreal_ros.finetune.ppo import actor_distance, finetune_ppo
    from simreal_ros.policy.export import export_onnx
    from simreal_ros.training.train import DeterministicPolicy

    torch.set_num_threads(1)
    bar = tqdm(total=int(hp["timesteps"]), desc="simreal finetune (ppo)", unit="step", disable=not progress,
               dynamic_ncols=True)
    try:
        model, info = finetune_ppo(parent, task_name, str(randomization), logged.observations, hp, seed, bar)
    finally:
        bar.close()
    m = parent.manifest
    dist = actor_distance(model, parent, logged.observations)
    wall = time.monotonic() - t_start
    provenance = {
        "tool": "simreal finetune", "command": command or "",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "seed": seed,
        "parent": {"name": m.name, "sha256": parent_hash, "path": str(bundle_dir.resolve()),
                   "training": m.provenance.get("training"), "randomization": m.provenance.get("randomization")},
        "datasets": datasets,
        "calibration": {"randomization": str(randomization),
                        "ranges": _plain_ranges(randomization)},
        "finetuning": {**info, "transitions": {"logged": len(logged), "simulated": int(hp["timesteps"])},
                       "distance_to_parent": {"final": dist}, "wall_time_s": round(wall, 1)},
    }
    policy = model.policy.to("cpu")
    manifest = _write_bundle(parent, bundle_dir, parent_hash, out, name, provenance,
                             lambda path: export_onnx(DeterministicPolicy.make(policy), m.obs_dim, path))
    from simreal_ros.training.action_stats import record_action_statistics

    record_action_statistics(out, profile=str(randomization), seed=seed + 20_000)  # drift monitor
    from simreal_ros.finetune.data import bundle_hash

    if bundle_hash(bundle_dir) != parent_hash:
        raise RuntimeError(f"the parent bundle {bundle_dir} changed during fine-tuning")
    return {"out": str(out), "name": manifest.name, "parent": m.name, "parent_sha256": parent_hash,
            "method": "ppo", "wall_time_s": round(time.monotonic() - t_start, 1),
            **provenance["finetuning"]["transitions"],
            "distance_to_parent": {"final": dist}, "phases": info["phases"]}


def _plain_ranges(randomization: str) -> dict[str, Any]:
    from dataclasses import asdict

    from simreal_ros.sim.randomize import load_ranges

    return {"contact": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in asdict(load_ranges(profile=randomization).contact).items()}}


def _command(args: argparse.Namespace) -> str:
    argv = getattr(args, "argv", None)
    if argv is None:
        argv = sys.argv[1:]
        if argv and argv[0] == "finetune":
            argv = argv[1:]
    return "simreal finetune " + " ".join(shlex.quote(a) for a in argv)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "from_exploration", False):
        from simreal_ros.finetune import explore

        return explore.run(args, _command(args))
    td3bc = {"steps": args.steps, "critic_warmup": args.critic_warmup, "distill_steps": args.distill_steps,
             "batch_size": args.batch_size, "actor_lr": args.actor_lr, "critic_lr": args.critic_lr, "alpha": args.alpha,
             "sim_episodes": args.sim_episodes, "sim_noise": args.sim_noise, "sim_ratio": args.sim_ratio}
    ppo = {"timesteps": args.timesteps, "value_warmup": args.value_warmup, "learning_rate": args.learning_rate,
           "n_envs": args.n_envs, "log_std_init": args.log_std_init, "intervention_penalty": args.intervention_penalty,
           "revert_penalty": args.revert_penalty}
    try:
        if args.method == "ppo":
            given = [k for k, v in td3bc.items() if v != DEFAULTS[k]]
            if given:
                raise DataError(f"--method ppo does not take {', '.join('--' + k.replace('_', '-') for k in given)}")
            settings = ppo
        else:
            given = [k for k, v in ppo.items() if v is not None]
            if given:
                raise DataError(f"--method td3bc does not take {', '.join('--' + k.replace('_', '-') for k in given)}")
            settings = td3bc
        res = finetune(args.bundle, args.data, args.out, randomization=args.randomization, name=args.name,
                       seed=args.seed, progress=not args.no_progress, command=_command(args), method=args.method,
                       ref_weight=args.ref_weight, gamma=args.gamma, **settings)
    except (DataError, ValueError) as exc:
        print(f"simreal finetune: error: {exc}", file=sys.stderr)
        return 2
    dist = res["distance_to_parent"]
    if args.method == "ppo":
        print(f"fine-tuned '{res['parent']}' -> '{res['name']}' with PPO over {res['simulated']} simulated steps "
              f"(held to {res['logged']} logged states) in {res['wall_time_s']:.0f} s; mean |action - parent's| "
              f"{dist['final']['mean_abs']:.3f} on the logged states; bundle written to {res['out']}")
        return 0
    print(f"fine-tuned '{res['parent']}' -> '{res['name']}' on {res['logged']} logged + {res['simulated']} simulated "
          f"transitions in {res['wall_time_s']:.0f} s; mean |action - parent's| {dist['final']['mean_abs']:.3f} "
          f"(after distillation {dist['after_distillation']['mean_abs']:.3f}); bundle written to {res['out']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main("finetune", sys.modules[__name__], argv, keep_argv=True)


if __name__ == "__main__":
    sys.exit(main())
