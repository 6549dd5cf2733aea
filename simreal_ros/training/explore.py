"""A family of exploration policies for the push task (``simreal train --task push --explore N``).

After Wagenmaker et al. (NeurIPS 2024, "Overcoming the Sim-to-Real Gap: Leveraging Simulation to
Learn to Explore for Real-World RL"): instead of one task policy, simulation trains N policies
that solve the task *in different ways*, so that where the real table differs from the
simulated one some of them still visit the states a task policy must learn from. As there:

- ONE network conditioned on a latent code z (one-hot of N, appended to the observation:
  :class:`LatentWrapper`), trained with stable-baselines3 SAC;
- its reward is the task reward plus a diversity reward from a learned discriminator q(z|s) of
  the code from the state (DIAYN, Eysenbach et al. 2019: ``log q(z|s') - log p(z)``, p uniform),
  on the tool and puck positions in the table plane (:class:`Discriminator`, torch);
- the diversity reward is added only once the task reward passes a threshold
  (:attr:`ExploreConfig.diversity_threshold`): the family first learns to push at all.

The discriminator trains in an SB3 callback (:class:`DiscriminatorCallback`) on the replay
buffer's next states (SB3 keeps them unnormalized beside VecNormalize), which also watches the
episodes' task returns for the threshold. The diversity reward is computed when a transition is
collected, with the discriminator of that moment (SB3 stores rewards in the replay buffer).
The wrapper and the callback share one :class:`Discriminator` object, so the environments run in
this process (``DummyVecEnv``; ``--subproc``/``--ray`` are refused with ``--explore``).

The bundle is an ordinary push bundle (same env, randomization, action filter and export as the
task policy, :mod:`simreal_ros.training.train`) whose manifest ends its observation terms with
``latent`` of size N: the policy node provides it from its ``latent`` parameter and
``latent_topic`` (:mod:`simreal_ros.nodes.policy_node`), ``simreal explore`` cycles it. The
discriminator's accuracy (held-out: the last transitions collected) is in
``provenance.exploration``.
"""

from __future__ import annotations

import argparse
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from simreal_ros.policy.observation import one_hot, term_sizes
from simreal_ros.settings import from_settings, setting, settings_of, validate_fields

#: the terms the discriminator sees (positions in the table plane)
DISCRIMINATOR_TERMS = ("tool_xy", "object_xy")


@dataclass
class ExploreConfig:
    """Settings of exploration training (``simreal train --explore N``; flags ``--explore-<name>``)."""

    diversity_weight: float = setting(0.5, "weight of the diversity reward log q(z|s') - log p(z) added to the task "
                                      "reward", low=0.0, high=100.0)
    diversity_threshold: float = setting(-15.0, "the diversity reward is added once the mean task return of the "
                                         "last threshold_episodes episodes reaches this (the push task: a random "
                                         "policy gets about -40, the shipped task policy +7.5)", low=-1e6, high=1e6)
    threshold_episodes: int = setting(20, "episodes averaged for the threshold", low=1, high=100000)
    discriminator_hidden: int = setting(128, "units of each of the discriminator's two hidden layers", low=4,
                                        high=4096)
    discriminator_lr: float = setting(3e-4, "discriminator learning rate (Adam)", low=1e-7, high=1.0)
    discriminator_batch: int = setting(256, "transitions per discriminator update", low=8, high=100000)
    discriminator_every: int = setting(100, "environment steps between discriminator updates", low=1, high=1000000)
    discriminator_updates: int = setting(4, "gradient steps per discriminator update", low=1, high=10000)
    holdout: int = setting(2000, "the last transitions collected on which the final discriminator accuracy is "
                           "reported (provenance.exploration)", low=10, high=10000000)

    def __post_init__(self) -> None:
        validate_fields(self)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--explore N`` and one ``--explore-<setting>`` flag per :class:`ExploreConfig` setting."""
    p.add_argument("--explore", type=int, default=0, metavar="N",
                   help="push only: train a family of N exploration policies (one SAC network conditioned on a "
                        "one-hot latent, task reward + DIAYN diversity reward; simreal_ros.training.explore)")
    for s in settings_of(ExploreConfig):
        p.add_argument("--explore-" + s.name.replace("_", "-"), dest="explore_" + s.name, type=s.kind,
                       default=s.default, help=f"{s.description} (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> ExploreConfig:
    return from_settings(ExploreConfig, {s.name: getattr(args, "explore_" + s.name, s.default)
                                         for s in settings_of(ExploreConfig)}, "simreal train --explore-*")


def feature_slices(terms: tuple[str, ...], n_joints: int) -> list[slice]:
    """Where :data:`DISCRIMINATOR_TERMS` sit in an observation of ``terms``."""
    sizes = term_sizes(terms, n_joints)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    missing = [t for t in DISCRIMINATOR_TERMS if t not in terms]
    if missing:
        raise ValueError(f"exploration training needs the observation terms {list(DISCRIMINATOR_TERMS)}; "
                         f"{missing} are not among {list(terms)}")
    return [slice(int(starts[terms.index(t)]), int(starts[terms.index(t)] + sizes[terms.index(t)]))
            for t in DISCRIMINATOR_TERMS]


class Discriminator:
    """q(z | tool, puck): an MLP classifier of the latent code from the table-plane positions.

    Features are scaled by the task's workspace (centre, half size), so they are O(1) whatever
    VecNormalize does to the policy's input. ``active`` turns the diversity reward on (the
    callback sets it once the task return passed the threshold).
    """

    def __init__(self, n: int, slices: list[slice], workspace: tuple[float, ...], config: ExploreConfig,
                 seed: int) -> None:
        import torch

        self.n, self.slices, self.config = int(n), slices, config
        x0, y0, x1, y1 = workspace
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        half = np.array([(x1 - x0) / 2, (y1 - y0) / 2])
        self.centre = np.concatenate([centre] * len(slices))
        self.half = np.concatenate([half] * len(slices))
        gen = torch.Generator().manual_seed(seed)
        h = config.discriminator_hidden
        dim = sum(s.stop - s.start for s in slices)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, h), torch.nn.ReLU(), torch.nn.Linear(h, h),
                                       torch.nn.ReLU(), torch.nn.Linear(h, self.n))
        with torch.no_grad():  # a seeded initialisation
            for layer in self.net:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) / math.sqrt(layer.in_features))
                    layer.bias.zero_()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.discriminator_lr)
        self.active = False
        self.updates = 0

    def features(self, obs: np.ndarray) -> np.ndarray:
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        x = np.concatenate([obs[:, s] for s in self.slices], axis=1)
        return ((x - self.centre) / self.half).astype(np.float32)

    def log_q(self, obs: np.ndarray, z: np.ndarray) -> np.ndarray:
        """log q(z | s) of each row (``z``: code indices)."""
        import torch

        with torch.no_grad():
            logp = torch.log_softmax(self.net(torch.as_tensor(self.features(obs))), dim=-1).numpy()
        return logp[np.arange(len(logp)), np.asarray(z, dtype=int)]

    def reward(self, obs: np.ndarray, z: int) -> float:
        """The DIAYN reward ``log q(z|s) - log p(z)`` (p uniform) of one state."""
        return float(self.log_q(obs, np.array([z]))[0] + math.log(self.n))

    def update(self, obs: np.ndarray, z: np.ndarray) -> tuple[float, float]:
        """One gradient step of cross-entropy; returns (loss, accuracy before the step)."""
        import torch

        logits = self.net(torch.as_tensor(self.features(obs)))
        target = torch.as_tensor(np.asarray(z, dtype=np.int64))
        loss = torch.nn.functional.cross_entropy(logits, target)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.updates += 1
        return float(loss.item()), float((logits.argmax(dim=-1) == target).float().mean().item())

    def accuracy(self, obs: np.ndarray, z: np.ndarray) -> float:
        import torch

        with torch.no_grad():
            pred = self.net(torch.as_tensor(self.features(obs))).argmax(dim=-1).numpy()
        return float(np.mean(pred == np.asarray(z, dtype=int)))


class LatentWrapper(gym.Wrapper):
    """Appends the episode's one-hot latent code to the observation (drawn uniformly at every
    reset from the env's seeded generator, or given as ``options={"latent": k}``) and adds the
    discriminator's diversity reward once it is active. ``info``: ``latent``, ``task_reward``,
    ``diversity_reward``."""

    def __init__(self, env: gym.Env, n: int, discriminator: Discriminator | None = None) -> None:
        super().__init__(env)
        if n < 1:
            raise ValueError(f"--explore needs N >= 1 latent codes, got {n}")
        self.n, self.disc = int(n), discriminator
        low = np.concatenate([env.observation_space.low, np.zeros(n)]).astype(np.float32)
        high = np.concatenate([env.observation_space.high, np.ones(n)]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.latent = 0

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, one_hot(self.latent, self.n)]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        opts = dict(options or {})
        given = opts.pop("latent", None)
        # the env's own options pass through; None stays None (the push env's auto-continue)
        obs, info = self.env.reset(seed=seed, options=options if given is None else (opts or None))
        self.latent = int(given) if given is not None else int(self.env.unwrapped.np_random.integers(self.n))
        return self._obs(obs), {**info, "latent": self.latent}

    def step(self, action):
        obs, task_reward, terminated, truncated, info = self.env.step(action)
        reward, div = float(task_reward), 0.0
        if self.disc is not None and self.disc.active:
            div = self.disc.reward(obs, self.latent)
            reward += self.disc.config.diversity_weight * div
        return self._obs(obs), reward, terminated, truncated, {**info, "latent": self.latent,
                                                               "task_reward": float(task_reward),
                                                               "diversity_reward": div}


class DiscriminatorCallback:
    """SB3 callback factory (lazy import): trains the discriminator on the replay buffer, turns the
    diversity reward on at the threshold, and keeps the figures for the provenance."""

    @staticmethod
    def make(disc: Discriminator, obs_dim: int, seed: int):
        from stable_baselines3.common.callbacks import BaseCallback

        cfg = disc.config
        rng = np.random.default_rng(seed)

        class Callback(BaseCallback):
            def _on_training_start(self) -> None:
                n_envs = self.training_env.num_envs
                self.returns: deque[float] = deque(maxlen=cfg.threshold_episodes)
                self.running = np.zeros(n_envs)
                self.episodes = 0
                self.activated_at: int | None = None
                self.history: list[dict[str, float]] = []
                self.last: tuple[float, float] | None = None

            def _on_step(self) -> bool:
                for i, (info, done) in enumerate(zip(self.locals.get("infos", []), self.locals.get("dones", []))):
                    self.running[i] += float(info.get("task_reward", 0.0))
                    if done:
                        self.returns.append(float(self.running[i]))
                        self.running[i] = 0.0
                        self.episodes += 1
                if (not disc.active and len(self.returns) >= cfg.threshold_episodes
                        and float(np.mean(self.returns)) >= cfg.diversity_threshold):
                    disc.active = True
                    self.activated_at = int(self.num_timesteps)
                buf = self.model.replay_buffer
                size = buf.buffer_size if buf.full else buf.pos
                if self.n_calls % cfg.discriminator_every == 0 and size >= cfg.discriminator_batch:
                    for _ in range(cfg.discriminator_updates):
                        idx = rng.integers(0, size, cfg.discriminator_batch)
                        env_idx = rng.integers(0, buf.n_envs, cfg.discriminator_batch)
                        nxt = buf.next_observations[idx, env_idx, :]
                        z = np.argmax(nxt[:, obs_dim:], axis=1)
                        self.last = disc.update(nxt, z)
                    self.history.append({"step": int(self.num_timesteps), "loss": round(self.last[0], 4),
                                         "batch_accuracy": round(self.last[1], 4)})
                return True

        return Callback()


def holdout_accuracy(disc: Discriminator, buf, obs_dim: int, count: int) -> tuple[float, int]:
    """The discriminator's accuracy on the last ``count`` transitions collected (every env)."""
    size = buf.buffer_size if buf.full else buf.pos
    k = min(count, size)
    if k == 0:
        return float("nan"), 0
    idx = (np.arange(buf.pos - k, buf.pos)) % buf.buffer_size
    nxt = buf.next_observations[idx].reshape(-1, buf.next_observations.shape[-1])
    z = np.argmax(nxt[:, obs_dim:], axis=1)
    return disc.accuracy(nxt, z), int(len(nxt))


def provenance(n: int, cfg: ExploreConfig, disc: Discriminator, callback, accuracy: float, samples: int
               ) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "method": "Wagenmaker et al. 2024: one SAC policy conditioned on a one-hot latent, task reward + DIAYN "
                  "diversity reward log q(z|s') - log p(z) once the task return passed the threshold",
        "latent_size": int(n), "discriminator_terms": list(DISCRIMINATOR_TERMS), "settings": asdict(cfg),
        "diversity_active_from_step": callback.activated_at,
        "discriminator": {"accuracy": None if math.isnan(accuracy) else round(accuracy, 4),
                          "chance": round(1.0 / n, 4), "holdout_transitions": samples, "updates": disc.updates,
                          "history": callback.history[-20:]},
        "task_return_last_episodes": (round(float(np.mean(callback.returns)), 3) if callback.returns else None),
        "episodes": int(callback.episodes),
    }
