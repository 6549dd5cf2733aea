"""Warm start for RL: DAgger from an analytic expert, before PPO or SAC fine-tuning (and, for SAC,
the critics-first warm-up that keeps it: :func:`actor_warmup_callback`).

The reach task's expert is below; the push task's is the scripted pusher
(:mod:`simreal_ros.baseline.pusher`, see :mod:`simreal_ros.training.tasks`).

The expert is a *stateless* resolved-rate controller written only in terms of what the
policy observes (measured joints, goal, last action), so a network can represent it exactly:

* joint step ``dq = gain * J^T (J J^T + lambda^2 I)^-1 (goal - flange) + N (k (q_ready - q))``
  (damped least squares on the flange position, null-space pull to the ready pose),
* as an action ``dq / action_scale`` scaled uniformly into ``[-1, 1]``,
* changing by at most ``max_action_change`` per step (from the observed last action), so the
  commanded acceleration stays within what the safety shield passes.

DAgger (Ross et al., 2011) rolls out a mixture of expert and learner in the randomized env,
labels every visited observation with the expert's action and fits the policy network's
mean action by regression. The result initialises SB3's PPO policy (same network), and its
observation statistics become the ``VecNormalize`` statistics (kept fixed afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simreal_ros.policy.action import limit_change
from simreal_ros.robot import RobotModel


@dataclass(frozen=True)
class ExpertConfig:
    gain: float = 1.0  # fraction of the Cartesian error corrected per step
    damping: float = 0.05  # DLS damping (m)
    posture_gain: float = 0.05  # null-space pull per step
    max_action_change: float = 0.3  # per step, in action units


def expert_action(robot: RobotModel, q: np.ndarray, goal: np.ndarray, last_action: np.ndarray,
                  action_scale: float, cfg: ExpertConfig = ExpertConfig()) -> np.ndarray:
    """The expert's action for measured joints ``q``, ``goal`` and the previous action."""
    T = robot.link_transforms(q)
    e = goal - T[-1][:3, 3]
    J = robot.jacobian(q)[:3]
    JJt = J @ J.T
    dq = cfg.gain * (J.T @ np.linalg.solve(JJt + cfg.damping**2 * np.eye(3), e))
    J_pinv = J.T @ np.linalg.inv(JJt + 1e-9 * np.eye(3))
    dq = dq + (np.eye(robot.n_joints) - J_pinv @ J) @ (cfg.posture_gain * (robot.ready_pose - q))
    a = dq / action_scale
    m = float(np.max(np.abs(a)))
    if m > 1.0:
        a = a / m
    return np.clip(a, last_action - cfg.max_action_change, last_action + cfg.max_action_change)


def reach_expert(env, last_action: np.ndarray, cfg: ExpertConfig = ExpertConfig()) -> np.ndarray:
    """:func:`expert_action` on a ReachEnv's measured joints and goal, through the env's declared
    action filter (the labels are actions the policy can take)."""
    a = expert_action(env.robot, env.measurement.position, env.goal, last_action, env.action_scale, cfg)
    return limit_change(a, last_action, env.action_max_change)


def collect(env, policy_fn, steps: int, beta: float, rng: np.random.Generator, noise: float,
            expert=reach_expert) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Roll out for ``steps``: each episode is driven by the expert with probability ``beta``
    (else by ``policy_fn(obs)``), plus Gaussian action noise; returns (observations, expert
    labels, stats). ``expert(env, last_action)`` labels the env's current state from what a
    controller observes. An env with a task ``continue_probability`` (push) continues that share
    of its episodes from where the last ended, as in PPO training and the graph."""
    obs_list, act_list, successes = [], [], []
    p_continue = float(getattr(getattr(env.unwrapped, "task", None), "continue_probability", 0.0))
    obs, info = env.reset(seed=int(rng.integers(2**31)))
    use_expert = rng.random() < beta
    dim = env.action_space.shape[0]
    last = np.zeros(dim)
    for _ in range(steps):
        label = expert(env, last)
        act = label if use_expert else np.asarray(policy_fn(obs), dtype=float)
        if noise > 0:
            act = act + noise * rng.standard_normal(act.shape)
        act = np.clip(act, -1.0, 1.0)
        obs_list.append(obs)
        act_list.append(label)
        obs, _, term, trunc, info = env.step(act)
        last = act
        if term or trunc:
            successes.append(float(info["is_success"]))
            obs, info = env.reset(seed=int(rng.integers(2**31)), options={"continue": bool(rng.random() < p_continue)})
            use_expert = rng.random() < beta
            last = np.zeros(dim)
    stats = {"episodes": len(successes), "success": float(np.mean(successes)) if successes else float("nan")}
    return np.asarray(obs_list, dtype=np.float32), np.asarray(act_list, dtype=np.float32), stats


def _mean_action(policy):
    """(parameters, forward) of an SB3 policy's deterministic action: PPO's Gaussian mean, SAC's
    tanh-squashed mean (its actor's)."""
    import torch

    actor = getattr(policy, "actor", None)
    if actor is not None:  # SAC
        params = list(actor.latent_pi.parameters()) + list(actor.mu.parameters())

        def forward(x):
            return torch.tanh(actor.mu(actor.latent_pi(actor.extract_features(x, actor.features_extractor))))

        return params, forward
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    if hasattr(policy, "features_extractor"):
        params += list(policy.features_extractor.parameters())

    def forward(x):
        return policy.action_net(policy.mlp_extractor.forward_actor(policy.extract_features(
            x, policy.pi_features_extractor)))

    return params, forward


def fit(policy, obs_n: np.ndarray, actions: np.ndarray, epochs: int, lr: float, seed: int,
        batch_size: int = 256) -> float:
    """Regress the SB3 policy's deterministic action (PPO or SAC) on normalised observations; returns
    the final MSE."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(obs_n)
    y = torch.as_tensor(actions)
    params, forward = _mean_action(policy)
    opt = torch.optim.Adam(params, lr=lr)
    loss_val = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            pred = forward(x[idx])
            loss = torch.mean((pred - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        loss_val = total / count
    return loss_val


def dagger(model, make_env, total_steps: int, iterations: int, seed: int, epochs: int = 15, lr: float = 1e-3,
           noise: float = 0.1, progress=None, expert=reach_expert,
           expert_info: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Pre-train ``model.policy`` (SB3 PPO) by DAgger; returns (obs mean, obs var, report).

    ``make_env()`` gives a fresh (randomized) env; ``expert`` labels its states (see
    :func:`collect`). Iteration 0 is pure expert; later ones use the learner with probability
    ``1 - 0.5**i``.
    """
    import torch

    rng = np.random.default_rng(seed)
    env = make_env()
    per_iter = max(1, total_steps // max(1, iterations))
    X, Y = [], []
    mean = var = None
    report: dict[str, Any] = {"iterations": [], "expert": expert_info if expert_info is not None
                              else ExpertConfig().__dict__}
    policy = model.policy

    def learner(obs: np.ndarray) -> np.ndarray:
        z = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10.0, 10.0).astype(np.float32)
        with torch.no_grad():
            a = policy._predict(torch.as_tensor(z[None]), deterministic=True)
        return a.numpy()[0]

    for it in range(max(1, iterations)):
        beta = 1.0 if it == 0 else 0.5**it
        x, y, stats = collect(env, learner, per_iter, beta, rng, noise if it == 0 else noise / 2, expert)
        X.append(x)
        Y.append(y)
        xs, ys = np.concatenate(X), np.concatenate(Y)
        if it == 0:  # statistics of the expert's state distribution, as VecNormalize would gather them
            mean, var = xs.mean(axis=0).astype(np.float64), xs.var(axis=0).astype(np.float64)
        z = np.clip((xs - mean) / np.sqrt(var + 1e-8), -10.0, 10.0).astype(np.float32)
        mse = fit(policy, z, ys, epochs, lr, seed + it)
        report["iterations"].append({"beta": beta, "samples": int(len(xs)), "rollout_success": stats["success"],
                                     "mse": mse})
        if progress is not None:
            progress(per_iter, f"dagger {it + 1}/{iterations}: mse {mse:.4f}, rollout success {stats['success']:.2f}")
    env.close()
    return mean, var, report


def actor_warmup_callback(steps: int):
    """SB3 callback (lazy import): SAC's actor frozen (no gradient) for the first ``steps`` env
    steps (all envs), the critics and the entropy coefficient learning; then the actor learns as
    usual. After a warm start (:func:`dagger`) an untrained critic's gradients otherwise pull the
    actor away from the expert before the critic knows anything (the push family of 2026-12-04:
    the warm start's 99 % rollout success fell to a task return of -30, near a random policy's -40)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Callback(BaseCallback):
        def _set(self, on: bool) -> None:
            for p in self.model.actor.parameters():
                p.requires_grad_(on)

        def _on_training_start(self) -> None:
            self.frozen = steps > 0
            self._set(not self.frozen)

        def _on_step(self) -> bool:
            if self.frozen and self.num_timesteps >= steps:
                self.frozen = False
                self._set(True)
            return True

        def _on_training_end(self) -> None:
            self._set(True)

    return Callback()


def warm_log_std(model, log_std: float) -> float:
    """After a warm start of SAC (:func:`dagger` fits only the squashed mean): its exploration noise
    a constant ``log_std`` (pre-tanh) instead of the untrained log-std head's output (about
    exp(-0.6)..exp(0.1) per action on the push task, so the warm-started family collected nearly
    random actions: 10 % training success while its mean succeeded 99 %). SAC's entropy tuning
    takes it from there. Returns ``log_std``."""
    import torch

    head = model.actor.log_std
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(float(log_std))
    return float(log_std)
