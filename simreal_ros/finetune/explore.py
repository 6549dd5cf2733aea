"""``simreal finetune FAMILY --data DS --from-exploration``: learn the task from exploration data.

The practical algorithm of Wagenmaker et al. (NeurIPS 2024) after the exploration family
(``simreal train --task push --explore N``) has run on the arm (``simreal explore``, recorded,
``simreal dataset``): a task policy is learned with stable-baselines3 SAC from a replay buffer
seeded with the real transitions, together with simulation data. Here:

- the real transitions are the datasets' (checked against the family: task, robot, observation
  terms with the latent, actions), with the latent columns dropped: the task policy observes the
  task's terms only (``SimReal/Push-v0``'s, in the family's order before ``latent``); their rewards
  are the task reward the dataset recomputed (:mod:`simreal_ros.sim.rewards`, the env's own);
- SAC runs online in the simulator (``--randomization``, default the family's training profile)
  from scratch, its replay holding what it collects there; every batch takes ``1 - --sim-ratio``
  of its rows from the real transitions, which are never overwritten
  (:class:`MixedReplayBuffer`, RLPD's symmetric sampling at the default 0.5);
- the result is exported as a normal push bundle (:func:`simreal_ros.training.train.export_bundle`,
  the push task's manifest fields and declared action filter, action statistics for the drift
  monitor) whose provenance names the family (name, sha256), the datasets, the real episodes and
  transitions used, the ratio, the hyper-parameters and the wall time.

The family is only read (its files' hash is compared after the run).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import time
from pathlib import Path
from typing import Any

import numpy as np

#: the SAC settings of this method (SB3's otherwise); the training SAC's (train.SAC_DEFAULTS) but
#: learning from the first steps: the real transitions are in the replay from the start
SAC_FROM_EXPLORATION: dict[str, Any] = {"learning_rate": 3e-4, "buffer_size": 300_000, "gamma": 0.98, "tau": 0.01,
                                        "learning_starts": 256, "train_freq": 1, "gradient_steps": 1}


#: SAC's simulator steps when ``--timesteps`` is not given
DEFAULT_TIMESTEPS = 20_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The method's own flags on ``simreal finetune``'s parser (the others are shared; ``--timesteps``,
    SAC's simulator steps, is the PPO method's flag, :data:`DEFAULT_TIMESTEPS` when not given)."""
    p.add_argument("--from-exploration", action="store_true",
                   help="BUNDLE is an exploration family (simreal train --explore N) and DS its sessions "
                        "(simreal explore + simreal dataset): learn the task policy with SB3 SAC, online in the "
                        "simulator, every batch mixing the real transitions in (simreal_ros.finetune.explore)")
    p.add_argument("--net", default="256,256", help="--from-exploration: hidden layer sizes (default: %(default)s)")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="--from-exploration: first fit SAC's squashed mean by DAgger from the task's scripted expert "
                        "over this many simulator steps (the family's own warm start; 0: SAC from scratch, as the "
                        "paper; default: %(default)s)")
    p.add_argument("--dagger-iterations", type=int, default=4, help="--pretrain-steps: DAgger iterations "
                   "(default: %(default)s)")
    p.add_argument("--real-episodes", type=int, default=None,
                   help="--from-exploration: learn from the first K recorded episodes only (the datasets' order), "
                        "for success against the real episodes used (default: all)")
    p.add_argument("--actor-warmup", type=int, default=0,
                   help="--from-exploration: first simulator steps in which only the critics learn, the actor "
                        "frozen (keeps a warm start from an untrained critic's gradients; default: %(default)s)")


def make_mixed_buffer_class():
    """SB3's ReplayBuffer with a fixed second part (lazy import: SB3 is optional)."""
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    class MixedReplayBuffer(ReplayBuffer):
        """The online (simulated) ring plus ``real`` transitions kept apart and never overwritten;
        a batch takes ``round(real_ratio * batch)`` rows from ``real`` (uniformly) and the rest
        from the ring. Observations and rewards of both are normalized alike at sampling (SB3 keeps
        the raw ones and normalizes with the VecNormalize it is given)."""

        def __init__(self, *args, real: dict[str, np.ndarray], real_ratio: float, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.real = {k: np.asarray(v, dtype=np.float32) for k, v in real.items()}
            self.real_ratio = float(real_ratio)
            self.real_size = len(self.real["rewards"])

        def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
            n_real = int(round(self.real_ratio * batch_size)) if self.real_size else 0
            have_sim = self.full or self.pos > 0
            if not have_sim:
                n_real = batch_size
            parts = []
            if batch_size - n_real > 0:
                parts.append(super().sample(batch_size - n_real, env=env))
            if n_real > 0:
                idx = np.random.randint(0, self.real_size, size=n_real)
                r = self.real
                parts.append(ReplayBufferSamples(*map(self.to_torch, (
                    self._normalize_obs(r["observations"][idx], env), r["actions"][idx],
                    self._normalize_obs(r["next_observations"][idx], env), r["dones"][idx].reshape(-1, 1),
                    self._normalize_reward(r["rewards"][idx].reshape(-1, 1), env)))))
            if len(parts) == 1:
                return parts[0]
            import torch

            return ReplayBufferSamples(*(torch.cat([getattr(p, f) for p in parts])
                                         for f in ("observations", "actions", "next_observations", "dones", "rewards")))

    return MixedReplayBuffer


def real_transitions(steps, latent_slice: slice) -> dict[str, np.ndarray]:
    """The datasets' transitions for the task policy: the latent columns dropped; ``dones`` only
    where the task ended (a timeout or a cut episode bootstraps)."""
    keep = np.ones(steps.observations.shape[1], dtype=bool)
    keep[latent_slice] = False
    return {"observations": steps.observations[:, keep], "next_observations": steps.next_observations[:, keep],
            "actions": np.clip(steps.actions, -1.0, 1.0), "rewards": steps.rewards,
            "dones": steps.terminals.astype(np.float32)}


def finetune_from_exploration(family: str | Path, data: list[str | Path], out: str | Path, *,
                              randomization: str | None = None, timesteps: int = 20_000, sim_ratio: float = 0.5,
                              batch_size: int = 256, net: str = "256,256", seed: int = 0, name: str | None = None,
                              pretrain_steps: int = 0, dagger_iterations: int = 4, actor_warmup: int = 0,
                              real_episodes: int | None = None, log_std_init: float | None = None,
                              progress: bool = True, command: str = "") -> dict[str, Any]:
    """Learn the push task policy from the family's datasets and the simulator; write the bundle."""
    import torch
    from gymnasium.wrappers import RecordEpisodeStatistics
    from stable_baselines3 import SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from simreal_ros.finetune.data import DataError, bundle_hash, load_logged
    from simreal_ros.finetune.finetune import check_out
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.robot import load_robot
    from simreal_ros.sim.randomize import load_ranges
    from simreal_ros.training.action_stats import record_action_statistics
    from simreal_ros.training.tasks import task, task_of_manifest
    from simreal_ros.training.train import _Progress, export_bundle, quiet_logger

    torch.set_num_threads(1)
    family_dir, out = Path(family), Path(out)
    if not family_dir.is_dir():
        raise DataError(f"no such bundle directory: {family_dir}")
    check_out(out, family_dir)
    if timesteps < 1:
        raise ValueError(f"--timesteps must be >= 1, got {timesteps}")
    if pretrain_steps < 0 or actor_warmup < 0 or dagger_iterations < 1:
        raise ValueError(f"--pretrain-steps ({pretrain_steps}) and --actor-warmup ({actor_warmup}) must be >= 0, "
                         f"--dagger-iterations ({dagger_iterations}) >= 1")
    if not 0.0 <= sim_ratio < 1.0:
        raise ValueError(f"--sim-ratio must be in [0, 1) with --from-exploration (some real data in every batch), "
                         f"got {sim_ratio}")
    robot = load_robot()
    parent = load_bundle(family_dir, robot)
    m = parent.manifest
    n_latent = dict(m.obs_terms).get("latent")
    if n_latent is None:
        raise DataError(f"bundle '{m.name}' ({family_dir}) has no 'latent' observation term: --from-exploration "
                        "needs an exploration family (simreal train --task push --explore N)")
    task_name = task_of_manifest(m)
    spec = task(task_name)
    if m.term_names[-1] != "latent" or tuple(m.term_names[:-1]) != tuple(spec.obs_terms):
        raise DataError(f"bundle '{m.name}' observes {m.term_names}; a {task_name} family observes "
                        f"{[*spec.obs_terms, 'latent']}")
    parent_hash = bundle_hash(family_dir)
    steps, info = load_logged(data, m, task_name)  # refused: another task, robot, terms or actions
    recorded_episodes = len(steps.episode_bounds)
    if real_episodes is not None:
        steps = steps.first_episodes(real_episodes)
    real = real_transitions(steps, m.term_slices()["latent"])
    profile = randomization or ((m.provenance.get("randomization") or {}).get("profile") or "default")
    ranges = load_ranges(profile=profile)
    net_arch = [int(x) for x in str(net).split(",") if x.strip()]

    def make():
        env = RecordEpisodeStatistics(spec.make_env(randomization=ranges))
        env.reset(seed=seed)
        return env

    probe = spec.make_env(randomization=ranges)
    fields = spec.manifest_fields(probe)
    action_scale, rate = fields.pop("action_scale"), fields.pop("control_rate_hz")
    probe.close()
    hp = {**SAC_FROM_EXPLORATION, "batch_size": int(batch_size)}
    hp["learning_starts"] = min(hp["learning_starts"], max(1, timesteps // 10))
    venv = VecNormalize(DummyVecEnv([make]), norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=hp["gamma"])
    # the observation statistics start from the real data (the simulated steps then move them)
    venv.obs_rms.mean = real["observations"].mean(axis=0).astype(np.float64)
    venv.obs_rms.var = real["observations"].var(axis=0).astype(np.float64)
    venv.obs_rms.count = float(len(real["observations"]))
    model = SAC("MlpPolicy", venv, seed=seed, policy_kwargs={"net_arch": net_arch}, device="cpu", verbose=0,
                replay_buffer_class=make_mixed_buffer_class(),
                replay_buffer_kwargs={"real": real, "real_ratio": 1.0 - sim_ratio}, **hp)
    quiet_logger(model)
    t0 = time.monotonic()
    pretrain = None
    if pretrain_steps:  # the family's warm start (simreal train --pretrain-steps); its obs statistics seed VecNormalize
        from simreal_ros.training.train import pretrain_warm_start

        pretrain = pretrain_warm_start(model, venv, argparse.Namespace(
            task=task_name, randomization=ranges, pretrain_steps=pretrain_steps,
            dagger_iterations=dagger_iterations, seed=seed, no_progress=not progress))
        from simreal_ros.finetune.ppo import PPO_FT_DEFAULTS as PPO
        from simreal_ros.training.imitation import warm_log_std

        pretrain["log_std_init"] = warm_log_std(model, PPO["log_std_init"] if log_std_init is None else log_std_init)
    callbacks = [_Progress.make(timesteps, progress)]
    if actor_warmup:
        from simreal_ros.training.imitation import actor_warmup_callback

        callbacks.append(actor_warmup_callback(actor_warmup))
    model.learn(total_timesteps=timesteps, callback=callbacks)
    wall = time.monotonic() - t0
    venv.close()
    episodes = len(steps.episode_bounds)
    provenance: dict[str, Any] = {
        "tool": "simreal finetune --from-exploration",
        "command": command,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "training": {"library": "stable-baselines3", "algorithm": "SAC", "timesteps": timesteps, "n_envs": 1,
                     "net_arch": net_arch, "hyperparameters": hp, "actor_warmup": actor_warmup,
                     "wall_time_s": round(wall, 1), "torch_threads": 1,
                     "env": {"id": spec.env_id, "action_scale": action_scale, "control_rate_hz": rate}},
        "randomization": {"profile": profile},
        "from_exploration": {
            "method": "Wagenmaker et al. 2024, practical algorithm: SAC from a replay seeded with the exploration "
                      "family's real transitions (latent dropped), online in the simulator; each batch "
                      f"{1.0 - sim_ratio:.2f} real (MixedReplayBuffer)",
            "family": {"name": m.name, "sha256": parent_hash, "path": str(family_dir.resolve()),
                       "latent_size": int(n_latent)},
            "datasets": info, "real_transitions": len(steps), "real_episodes": episodes,
            "recorded_episodes": recorded_episodes,
            "real_episode_latents": sorted({int(np.argmax(steps.observations[a, m.term_slices()["latent"]]))
                                            for a, _ in steps.episode_bounds}),
            "sim_ratio": sim_ratio,
        },
    }
    if pretrain is not None:
        provenance["training"]["pretraining"] = pretrain
    bundle = export_bundle(model, venv, out, name or f"{m.name}_task", provenance, action_scale, rate,
                           spec.obs_terms, **fields)
    record_action_statistics(bundle, profile=profile, seed=seed + 20_000)  # the drift monitor's
    if bundle_hash(family_dir) != parent_hash:
        raise RuntimeError(f"the family bundle {family_dir} changed during fine-tuning")
    return {"out": str(bundle), "name": name or f"{m.name}_task", "family": m.name, "real_transitions": len(steps),
            "real_episodes": episodes, "timesteps": timesteps, "wall_time_s": round(wall, 1)}


def run(args: argparse.Namespace, command: str) -> int:
    """``simreal finetune --from-exploration``: exit 0, or 2 with one line on bad input."""
    import sys

    from simreal_ros.finetune.data import DataError
    from simreal_ros.policy.bundle import BundleError

    try:
        res = finetune_from_exploration(args.bundle, args.data, args.out, randomization=args.randomization,
                                        timesteps=args.timesteps if args.timesteps is not None
                                        else DEFAULT_TIMESTEPS, sim_ratio=args.sim_ratio,
                                        batch_size=args.batch_size, net=args.net, seed=args.seed, name=args.name,
                                        pretrain_steps=args.pretrain_steps, dagger_iterations=args.dagger_iterations,
                                        actor_warmup=args.actor_warmup, real_episodes=args.real_episodes,
                                        log_std_init=args.log_std_init,
                                        progress=not args.no_progress, command=command)
    except (DataError, BundleError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"simreal finetune: error: {msg}", file=sys.stderr)
        return 2
    print(f"learned the task from {res['real_transitions']} real transitions ({res['real_episodes']} episodes of "
          f"'{res['family']}') and {res['timesteps']} simulator steps in {res['wall_time_s']:.0f} s; bundle "
          f"written to {res['out']}")
    return 0
