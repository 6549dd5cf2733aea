"""``simreal train``: train a policy in the randomized sim and export a bundle.

Stable-Baselines3 (PPO by default) on the task's env (``--task reach``: ``SimReal/Reach-v0``;
``--task push``: ``SimReal/Push-v0``, see :mod:`simreal_ros.training.tasks`) with domain randomization,
observation normalisation by ``VecNormalize`` and a tqdm progress bar. The result is a
policy bundle (ONNX model + ``manifest.yaml``) whose provenance records the exact command
line, seed, hyper-parameters, randomization, wall time and, with ``--eval-episodes``, the
evaluation results; ``policies/reach_default`` is produced this way. ``--task push --explore N``
trains a family of N exploration policies instead (SAC, :mod:`simreal_ros.training.explore`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros.cli import standalone_main
from simreal_ros.training.action_stats import EPISODES as STATS_EPISODES
from simreal_ros.training.tasks import TASK_NAMES, task

ALGORITHMS = ("ppo", "sac")

#: PPO settings of the shipped policy (SB3 defaults otherwise)
PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 256, "batch_size": 256, "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.99,
    "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "max_grad_norm": 0.5,
}
SAC_DEFAULTS: dict[str, Any] = {"learning_rate": 3e-4, "buffer_size": 300_000, "batch_size": 256, "gamma": 0.98,
                                "tau": 0.01, "learning_starts": 2000, "train_freq": 1, "gradient_steps": 1}


#: ``--log-std-init`` per algorithm: PPO's initial action noise; SAC's after a warm start (smaller:
#: the push family's training episodes returned -23 at -1.6, -35 at -1.0, -53 at 0 after 600 steps)
LOG_STD_INIT = {"ppo": -1.0, "sac": -1.6}
#: SAC's entropy coefficient after a warm start: tuned as usual, from 0.01 instead of SB3's 1.0 (at
#: 1.0 the entropy bonus outweighs the normalized task reward, and the push family's training success
#: fell from 0.97 to 0.07 within 15,000 steps of the actor learning)
WARM_ENT_COEF = "auto_0.01"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASK_NAMES, default="reach", help="task to train (default: %(default)s)")
    p.add_argument("--out", default=None, help="bundle directory to write (default: <task>_policy)")
    p.add_argument("--name", default=None, help="policy name in the manifest (default: <task>_default; with --explore <task>_family)")
    p.add_argument("--algo", choices=ALGORITHMS, default=None,
                   help="SB3 algorithm (default: ppo; sac with --explore, which needs it)")
    p.add_argument("--timesteps", type=int, default=1_000_000, help="environment steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=8, help="parallel environments (default: %(default)s)")
    p.add_argument("--subproc", action="store_true", help="one process per environment (SubprocVecEnv)")
    p.add_argument("--randomization", default="default",
                   help="profile in config/randomization.yaml (default: %(default)s)")
    p.add_argument("--net", default="256,256", help="hidden layer sizes (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=None, help="override the algorithm's learning rate")
    p.add_argument("--log-std-init", type=float, default=None,
                   help="initial log std of the exploration noise: PPO's actions, and SAC's (pre-tanh) after a "
                        f"--pretrain-steps warm start (default: {LOG_STD_INIT})")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="PPO (and --explore's SAC): DAgger warm start from the analytic expert for this many env "
                        "steps (0: off)")
    p.add_argument("--dagger-iterations", type=int, default=4, help="DAgger iterations (default: %(default)s)")
    p.add_argument("--actor-warmup", type=int, default=0,
                   help="SAC (--explore): first env steps (all envs) in which only the critics learn, the actor "
                        "frozen, so an untrained critic does not pull a --pretrain-steps warm start apart "
                        "(default: %(default)s)")
    p.add_argument("--eval-episodes", type=int, default=0,
                   help="after training, evaluate this many episodes per condition and record them")
    p.add_argument("--stats-episodes", type=int, default=STATS_EPISODES,
                   help="shielded episodes of the trained policy whose action statistics the bundle carries for "
                        "the drift monitor (default: %(default)s)")
    p.add_argument("--workdir", default=None, help="keep the SB3 model and VecNormalize stats here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from simreal_ros.scale import add_ray_argument

    add_ray_argument(p, "the environments (one actor per CPU) and the --eval-episodes evaluation")
    from simreal_ros.training import explore

    explore.add_arguments(p)


def _log_std(args: argparse.Namespace) -> float:
    given = getattr(args, "log_std_init", None)
    return LOG_STD_INIT[args.algo] if given is None else float(given)


def _make_env(task_name: str, randomization: str, seed: int, rank: int, wrap=None):
    def thunk():
        from gymnasium.wrappers import RecordEpisodeStatistics

        env = task(task_name).make_env(randomization=randomization)
        env = RecordEpisodeStatistics(wrap(env) if wrap is not None else env)
        env.reset(seed=seed + 1000 * rank)
        return env
    return thunk


class _Progress:
    """SB3 callback factory (kept lazy: stable-baselines3 is an optional dependency).

    The callback shows a tqdm bar with the recent training success rate and, with
    ``checkpoint=(dir, every)``, saves the model and VecNormalize statistics every ``every`` steps.
    """

    @staticmethod
    def make(total: int, enabled: bool, checkpoint: tuple[Path, int] | None = None):
        from stable_baselines3.common.callbacks import BaseCallback
        from tqdm import tqdm

        class ProgressBar(BaseCallback):
            def _on_training_start(self) -> None:
                self.bar = tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True,
                                desc="simreal train")
                self.success: list[float] = []
                self._saved = 0

            def _on_step(self) -> bool:
                self.bar.update(self.training_env.num_envs)
                if checkpoint and self.num_timesteps // checkpoint[1] > self._saved:
                    self._saved = self.num_timesteps // checkpoint[1]
                    self.model.save(checkpoint[0] / "model.zip")
                    self.training_env.save(str(checkpoint[0] / "vecnormalize.pkl"))
                for info, done in zip(self.locals.get("infos", []), self.locals.get("dones", [])):
                    if done:
                        self.success.append(float(info.get("is_success", False)))
                if self.success and self.n_calls % 200 == 0:
                    self.bar.set_postfix(success=f"{np.mean(self.success[-100:]):.2f}")
                return True

            def _on_training_end(self) -> None:
                self.bar.close()

        return ProgressBar()


class DeterministicPolicy:
    """torch module factory: normalised obs -> deterministic action of an SB3 policy.

    PPO: the Gaussian mean; SAC: the tanh-squashed mean (in [-1, 1]).
    """

    @staticmethod
    def make(policy):
        import torch

        class Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.policy = policy

            def forward(self, obs):
                return self.policy._predict(obs, deterministic=True)

        return Module().eval()


def export_bundle(model, vecnorm, out: Path, name: str, provenance: dict[str, Any], action_scale: float,
                  control_rate_hz: float, terms: tuple[str, ...] | None = None, **manifest_kw):
    """Write the bundle (ONNX + manifest with VecNormalize's statistics) and return its path."""
    from simreal_ros.policy.bundle import manifest_for, save_bundle
    from simreal_ros.policy.export import export_onnx
    from simreal_ros.policy.observation import DEFAULT_TERMS
    from simreal_ros.robot import load_robot

    rms = vecnorm.obs_rms
    std = np.sqrt(rms.var + vecnorm.epsilon)
    manifest = manifest_for(load_robot(), name, "policy.onnx", tuple(terms or DEFAULT_TERMS),
                            control_rate_hz=control_rate_hz, action_scale=action_scale, mean=rms.mean.tolist(),
                            std=std.tolist(), obs_clip=float(vecnorm.clip_obs), provenance=provenance, **manifest_kw)
    module = DeterministicPolicy.make(model.policy.to("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(module, manifest.obs_dim, Path(tmp) / "policy.onnx")
        return save_bundle(out, manifest, onnx_path)


def quiet_logger(model) -> None:
    """SB3's default logger makes a /tmp/SB3-<date> directory even when it writes nothing (verbose 0):
    a logger without outputs and without a folder leaves nothing behind."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))


def _argv(args: argparse.Namespace) -> list[str]:
    """The arguments after ``simreal train`` (from ``main(argv)`` or the process's command line)."""
    argv = getattr(args, "argv", None)
    if argv is None:
        argv = sys.argv[1:]
        if argv and argv[0] == "train":
            argv = argv[1:]
    return list(argv)


def pretrain_warm_start(model, venv, args: argparse.Namespace, wrap=None) -> dict[str, Any]:
    """DAgger warm start (see :mod:`simreal_ros.training.imitation`); seeds VecNormalize's obs statistics.
    ``wrap``: the envs' wrapper (the exploration family's latent), whose inner env the expert labels."""
    from tqdm import tqdm

    from simreal_ros.training.imitation import dagger

    spec = task(args.task)
    bar = tqdm(total=args.pretrain_steps, unit="step", desc="dagger warm start", disable=args.no_progress,
               dynamic_ncols=True)

    def progress(n: int, text: str) -> None:
        bar.update(n)
        bar.set_postfix_str(text)

    t0 = time.monotonic()
    def make_env():
        env = spec.make_env(randomization=args.randomization)
        return env if wrap is None else wrap(env)

    def expert(env, last):
        return spec.expert(env.unwrapped, last)

    mean, var, report = dagger(model, make_env, args.pretrain_steps, args.dagger_iterations, args.seed,
                               progress=progress, expert=expert, expert_info=spec.expert_info)
    bar.close()
    rms = venv.obs_rms
    rms.mean, rms.var, rms.count = mean.copy(), var.copy(), float(args.pretrain_steps)
    report.update(method=f"DAgger from the {args.task} task's expert: {spec.expert_info['kind']}",
                  steps=args.pretrain_steps, wall_time_s=round(time.monotonic() - t0, 1))
    return report


def train(args: argparse.Namespace) -> Path:
    """Train, export, optionally evaluate; returns the bundle directory."""
    import torch
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    from simreal_ros.sim.randomize import load_ranges

    torch.set_num_threads(1)
    spec = task(args.task)
    n_latent = int(getattr(args, "explore", 0) or 0)
    if n_latent:
        if args.task != "push":
            raise ValueError("--explore is for --task push (the exploration family of the push task)")
        if args.algo not in (None, "sac"):
            raise ValueError(f"--explore trains with SAC (the paper's algorithm); --algo {args.algo} cannot")
        if args.subproc or getattr(args, "ray", None) is not None:
            raise ValueError("--explore runs its environments in this process (they share the discriminator); "
                             "drop --subproc/--ray")
        if n_latent < 2 or n_latent > 64:
            raise ValueError(f"--explore N needs 2 <= N <= 64 latent codes, got {n_latent}")
    args.algo = args.algo or ("sac" if n_latent else "ppo")
    args.out = args.out or f"{args.task}_policy"
    args.name = args.name or (f"{args.task}_family" if n_latent else f"{args.task}_default")
    if args.timesteps < 1:
        raise ValueError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.stats_episodes < 1:
        raise ValueError(f"--stats-episodes must be >= 1, got {args.stats_episodes}")
    if args.n_envs < 1:
        raise ValueError(f"--n-envs must be >= 1, got {args.n_envs}")
    actor_warmup = int(getattr(args, "actor_warmup", 0) or 0)
    if actor_warmup < 0 or (actor_warmup and args.algo != "sac"):
        raise ValueError(f"--actor-warmup must be >= 0 and needs SAC (--algo sac or --explore), got {actor_warmup} "
                         f"with {args.algo}")
    net = [int(x) for x in str(args.net).split(",") if x.strip()]
    ranges = load_ranges(profile=args.randomization)  # fails early, naming the profile
    probe = spec.make_env(randomization=ranges)
    fields = spec.manifest_fields(probe)
    action_scale, rate = fields.pop("action_scale"), fields.pop("control_rate_hz")
    probe.close()

    ray_address = getattr(args, "ray", None)
    if ray_address is not None and args.subproc:
        raise ValueError("--ray and --subproc both choose where the environments run; give one")
    disc = wrap = explore_cfg = None
    if n_latent:
        from simreal_ros.robot import load_robot
        from simreal_ros.sim.push_task import load_push_task
        from simreal_ros.training import explore

        explore_cfg = explore.config_from_args(args)
        disc = explore.Discriminator(n_latent, explore.feature_slices(spec.obs_terms, load_robot().n_joints),
                                     tuple(load_push_task().workspace), explore_cfg, args.seed)

        def wrap(env):
            return explore.LatentWrapper(env, n_latent, disc)
    fns = [_make_env(args.task, args.randomization, args.seed, i, wrap) for i in range(args.n_envs)]
    if ray_address is not None:  # the same envs, seeds and order as locally, stepped in Ray actors
        from simreal_ros.scale import connect
        from simreal_ros.scale.vec_env import RayVecEnv

        connect(ray_address)
        venv = RayVecEnv(fns)
    else:
        venv = SubprocVecEnv(fns) if args.subproc and args.n_envs > 1 else DummyVecEnv(fns)
    hp = dict(PPO_DEFAULTS if args.algo == "ppo" else SAC_DEFAULTS)
    if args.learning_rate is not None:
        if not args.learning_rate > 0:
            raise ValueError(f"--learning-rate must be > 0, got {args.learning_rate}")
        hp["learning_rate"] = float(args.learning_rate)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=hp["gamma"])
    if args.algo == "ppo":
        hp["n_steps"] = max(16, hp["n_steps"] if args.n_envs >= 8 else hp["n_steps"] * 8 // args.n_envs)
        hp["batch_size"] = min(hp["batch_size"], hp["n_steps"] * args.n_envs)
        policy_kwargs = {"net_arch": {"pi": net, "vf": net}, "log_std_init": _log_std(args)}
        model = PPO("MlpPolicy", venv, seed=args.seed, policy_kwargs=policy_kwargs, device="cpu", verbose=0, **hp)
    else:
        hp["learning_starts"] = min(hp["learning_starts"], max(1, args.timesteps // 10))
        if args.pretrain_steps > 0:  # warm-started: collect with the pretrained actor, not uniform actions
            hp["learning_starts"] = min(hp["learning_starts"], hp["batch_size"])
            hp["ent_coef"] = WARM_ENT_COEF
        policy_kwargs = {"net_arch": net}
        model = SAC("MlpPolicy", venv, seed=args.seed, policy_kwargs=policy_kwargs, device="cpu", verbose=0, **hp)

    quiet_logger(model)
    pretrain = None
    if args.pretrain_steps > 0:
        if args.algo != "ppo" and not n_latent:
            raise ValueError("--pretrain-steps needs --algo ppo (the warm start fits PPO's Gaussian mean) or --explore "
                             "(SAC's squashed mean)")
        pretrain = pretrain_warm_start(model, venv, args, wrap)
        if args.algo == "sac":
            from simreal_ros.training.imitation import warm_log_std

            pretrain["log_std_init"] = warm_log_std(model, _log_std(args))
    wd = Path(args.workdir) if args.workdir else None
    if wd is not None:
        wd.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    callback = _Progress.make(args.timesteps, not args.no_progress, (wd, 100_000) if wd is not None else None)
    if disc is not None:
        obs_dim = int(venv.observation_space.shape[0]) - n_latent
        disc_cb = explore.DiscriminatorCallback.make(disc, obs_dim, args.seed)
        callback = [callback, disc_cb]
    if actor_warmup:
        from simreal_ros.training.imitation import actor_warmup_callback

        callback = [*(callback if isinstance(callback, list) else [callback]), actor_warmup_callback(actor_warmup)]
    model.learn(total_timesteps=args.timesteps, callback=callback)
    wall = time.monotonic() - t0
    if wd is not None:
        model.save(wd / "model.zip")
        venv.save(str(wd / "vecnormalize.pkl"))
    venv.close()

    provenance: dict[str, Any] = {
        "tool": "simreal train",
        "command": "simreal train " + " ".join(shlex.quote(a) for a in _argv(args)),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": args.seed,
        "training": {"library": "stable-baselines3", "algorithm": args.algo.upper(), "timesteps": args.timesteps,
                     "n_envs": args.n_envs, "net_arch": net, "hyperparameters": hp,
                     "policy_kwargs": {k: v for k, v in policy_kwargs.items() if k != "net_arch"},
                     "wall_time_s": round(wall, 1), "torch_threads": 1,
                     "env": {"id": spec.env_id, "action_scale": action_scale, "control_rate_hz": rate}},
        "randomization": {"profile": args.randomization, "ranges": asdict(ranges)},
    }
    if pretrain is not None:
        provenance["training"]["pretraining"] = pretrain
    if actor_warmup:
        provenance["training"]["actor_warmup"] = actor_warmup
    terms: tuple = spec.obs_terms
    if disc is not None:  # the family: the latent is the last observation term
        acc, held = explore.holdout_accuracy(disc, model.replay_buffer, obs_dim, explore_cfg.holdout)
        provenance["exploration"] = explore.provenance(n_latent, explore_cfg, disc, disc_cb, acc, held)
        terms = (*spec.obs_terms, ("latent", n_latent))
    out = export_bundle(model, venv, Path(args.out), args.name, provenance, action_scale, rate, terms, **fields)
    from simreal_ros.training.action_stats import record_action_statistics

    record_action_statistics(out, episodes=args.stats_episodes, profile=args.randomization,
                             seed=args.seed + 20_000)  # the drift monitor's
    print(f"trained {args.timesteps} steps in {wall:.0f} s; bundle written to {out}")
    if args.eval_episodes > 0:
        from simreal_ros.training.evaluate import record_in_manifest

        record_in_manifest(out, episodes=args.eval_episodes, seed=args.seed + 10_000,
                           workers=None if ray_address is not None else 2, ray=ray_address)
    return out


def run(args: argparse.Namespace) -> int:
    from simreal_ros.scale import RayUnavailableError

    try:
        train(args)
    except (ValueError, KeyError, RayUnavailableError) as exc:  # a bad argument or profile: one line
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"simreal train: error: {msg}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main("train", sys.modules[__name__], argv, keep_argv=True)


if __name__ == "__main__":
    sys.exit(main())
