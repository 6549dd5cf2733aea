"""``simreal finetune --method td3bc`` (the default): offline TD3+BC with d3rlpy 2.8.1 on the logged
(and simulated) transitions, held to the frozen parent (why this library and algorithm: README
"Fine-tuning"). :mod:`simreal_ros.finetune.finetune` dispatches to it and exports its bundle.

1. The actor is d3rlpy's deterministic policy with the bundle's own hidden layers and activation,
   its weights read from the bundle's ONNX graph (:func:`simreal_ros.finetune.networks.read_mlp`).
   d3rlpy squashes with ``tanh`` where the original clips, so a short distillation
   (``--distill-steps``) fits ``tanh`` to the original's clipped actions on the replay's states;
   the remaining difference is reported. A graph that is not a plain MLP is distilled from
   d3rlpy's default network instead (longer), and the provenance says so.
2. The replay: the logged transitions (``--data``, :func:`simreal_ros.dataset.load`) and, with
   ``--randomization PROFILE|calibration.yaml``, ``--sim-episodes`` episodes of the original policy
   with exploration noise in that simulator; every batch draws ``--sim-ratio`` of its rows from the
   simulated ones (d3rlpy's ``MixedReplayBuffer``: the symmetric sampling of RLPD).
3. TD3+BC: twin critics, for ``--critic-warmup`` steps the critics alone (the actor only held to
   the original), then the actor loss ``lambda * -Q + BC(logged actions) + ref_weight *
   |pi(s) - pi_ref(s)|^2``, where ``pi_ref`` is the frozen original run by ONNX Runtime. Small actor
   learning rate (``--actor-lr``).
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros.finetune.data import DataError, Steps

#: defaults of the fine-tuning (each a command-line option)
DEFAULTS: dict[str, Any] = {
    "steps": 3000, "critic_warmup": 1000, "distill_steps": 300, "batch_size": 256, "actor_lr": 3e-5,
    "critic_lr": 3e-4, "alpha": 2.5, "ref_weight": 1.0, "gamma": 0.99, "tau": 0.005, "sim_episodes": 20,
    "sim_noise": 0.1, "sim_ratio": 0.5,
}


def quiet_d3rlpy() -> None:
    """d3rlpy logs every epoch and its parameters through structlog at info: keep errors only."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def _make_impl_class():
    """TD3+BC's implementation with the frozen reference's term and a switch for the Q term."""
    import dataclasses

    import torch
    from d3rlpy.algos.qlearning.torch.td3_plus_bc_impl import TD3PlusBCActorLoss, TD3PlusBCImpl

    @dataclasses.dataclass(frozen=True)
    class RefActorLoss(TD3PlusBCActorLoss):
        ref_loss: torch.Tensor

    class RefTD3PlusBCImpl(TD3PlusBCImpl):
        reference: Any = None
        ref_weight: float = 1.0
        q_weight: float = 1.0

        def compute_actor_loss(self, batch, action, *args) -> RefActorLoss:
            q_t = self._q_func_forwarder.compute_expected_q(batch.observations, action.squashed_mu, "none")[0]
            lam = self._alpha / (q_t.abs().mean()).detach()
            bc_loss = ((batch.actions - action.squashed_mu) ** 2).mean()
            ref_loss = ((self.reference(batch.observations) - action.squashed_mu) ** 2).mean()
            loss = self.q_weight * lam * -q_t.mean() + bc_loss + self.ref_weight * ref_loss
            return RefActorLoss(actor_loss=loss, bc_loss=bc_loss, ref_loss=ref_loss)

    return RefTD3PlusBCImpl


def _distill(policy, reference, states: np.ndarray, steps: int, batch: int, lr: float, seed: int, bar) -> None:
    import torch

    gen = np.random.default_rng(seed)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    x_all = torch.as_tensor(states)
    y_all = torch.as_tensor(reference.numpy(states), dtype=torch.float32)
    for _ in range(steps):
        idx = torch.as_tensor(gen.integers(0, len(states), size=min(batch, len(states))))
        loss = ((policy(x_all[idx]).squashed_mu - y_all[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update(1)


def _actions_of(policy, states: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return policy(torch.as_tensor(states)).squashed_mu.numpy().astype(np.float64)


def _distance(policy, reference, states: np.ndarray) -> dict[str, float]:
    """How far the actor's actions are from the original's on ``states`` (action units)."""
    d = np.abs(_actions_of(policy, states) - reference.numpy(states))
    return {"mean_abs": float(d.mean()), "p95_abs": float(np.percentile(d, 95)), "max_abs": float(d.max())}


def finetune_td3bc(bundle: str | Path, data: list[str | Path] | Steps, out: str | Path, *,
                   randomization: str | None, name: str | None, seed: int, progress: bool, command: str | None,
                   **overrides: Any) -> dict[str, Any]:
    """``--method td3bc`` (the module docstring; the settings of :data:`DEFAULTS`): the inputs, the
    exported bundle and its guarantees are :mod:`simreal_ros.finetune.finetune`'s."""
    from simreal_ros.finetune.data import episodes_for_d3rlpy, normalized, simulate
    from simreal_ros.finetune.finetune import _inputs, _write_bundle

    hp = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(hp) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown fine-tuning settings {unknown}")
    for key in ("steps", "batch_size"):
        if int(hp[key]) < 1:
            raise DataError(f"--{key.replace('_', '-')} must be >= 1, got {hp[key]}")
    for key in ("critic_warmup", "distill_steps", "sim_episodes"):
        if int(hp[key]) < 0:
            raise DataError(f"--{key.replace('_', '-')} must be >= 0, got {hp[key]}")
    if not 0.0 < hp["sim_ratio"] < 1.0:
        raise DataError(f"--sim-ratio must be in (0, 1), got {hp['sim_ratio']}")
    for key in ("actor_lr", "critic_lr", "alpha"):
        if not hp[key] > 0:
            raise DataError(f"--{key.replace('_', '-')} must be > 0, got {hp[key]}")
    if not (hp["ref_weight"] >= 0 and hp["sim_noise"] >= 0 and 0 < hp["gamma"] < 1):
        raise DataError("--ref-weight and --sim-noise must be >= 0 and --gamma in (0, 1)")

    t_start = time.monotonic()
    out = Path(out)
    bundle_dir, parent, parent_hash, task_name, logged, datasets = _inputs(bundle, data, out)
    m = parent.manifest
    sim_profile = None
    if randomization is not None:
        from simreal_ros.sim.randomize import load_ranges

        load_ranges(profile=randomization)  # a bad profile or file: one line before anything runs
        sim_profile = randomization if hp["sim_episodes"] > 0 else None

    import d3rlpy  # after the input checks: a refusal is quick
    import torch
    from d3rlpy.dataset import InfiniteBuffer, MixedReplayBuffer, ReplayBuffer
    from tqdm import tqdm

    from simreal_ros.finetune.networks import Reference, export_actor, load_actor_weights, read_mlp

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    d3rlpy.seed(seed)
    quiet_d3rlpy()
    steps, warmup = int(hp["steps"]), min(int(hp["critic_warmup"]), int(hp["steps"]))
    total = steps + int(hp["distill_steps"]) + (int(hp["sim_episodes"]) if sim_profile else 0)
    bar = tqdm(total=total, desc="simreal finetune", unit="step", disable=not progress, dynamic_ncols=True)
    sim = None
    if sim_profile is not None:
        bar.set_postfix_str("simulating")
        sim = simulate(parent, task_name, int(hp["sim_episodes"]), seed + 1_000_000, hp["sim_noise"],
                       randomization=sim_profile, progress=bar.update)

    clip = float(m.action_clip)

    def buffer(steps_):
        eps = episodes_for_d3rlpy(steps_, m)
        for e in eps:  # d3rlpy's actions live in [-1, 1]
            object.__setattr__(e, "actions", (e.actions / clip).astype(np.float32))
        return ReplayBuffer(InfiniteBuffer(), episodes=eps)

    logged_buf = buffer(logged)
    replay = logged_buf if sim is None else MixedReplayBuffer(logged_buf, buffer(sim), float(hp["sim_ratio"]))
    states = normalized(m, logged.observations if sim is None else np.concatenate([logged.observations,
                                                                                     sim.observations]))
    mlp, mlp_why = read_mlp(parent.model_path, parent.infer, m.obs_dim)
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=mlp.hidden, activation=mlp.activation) \
        if mlp is not None else d3rlpy.models.VectorEncoderFactory()
    cfg = d3rlpy.algos.TD3PlusBCConfig(
        batch_size=int(hp["batch_size"]), gamma=float(hp["gamma"]), tau=float(hp["tau"]),
        actor_learning_rate=float(hp["actor_lr"]), critic_learning_rate=float(hp["critic_lr"]),
        alpha=float(hp["alpha"]), actor_encoder_factory=encoder)
    algo = cfg.create(device="cpu:0")
    algo.build_with_dataset(logged_buf)
    impl = algo.impl
    impl.__class__ = _make_impl_class()
    reference = Reference(parent)
    impl.reference, impl.ref_weight = reference, float(hp["ref_weight"])
    policy = impl._modules.policy
    if mlp is not None:
        load_actor_weights(policy, mlp)
        init = f"the parent's weights, read from its ONNX graph: {mlp_why}"
    else:
        init = f"d3rlpy's default actor, distilled from the parent (its ONNX graph is not read as an MLP: {mlp_why})"
    distill_steps = int(hp["distill_steps"]) if mlp is not None else max(int(hp["distill_steps"]), 3000)
    if distill_steps > int(hp["distill_steps"]):
        bar.total += distill_steps - int(hp["distill_steps"])
    before = _distance(policy, reference, states)
    bar.set_postfix_str("distilling")
    _distill(policy, reference, states, distill_steps, int(hp["batch_size"]), 1e-4, seed, bar)
    impl._modules.targ_policy.load_state_dict(policy.state_dict())
    after_distill = _distance(policy, reference, states)

    metrics: dict[str, float] = {}

    def on_step(algo_, epoch, step):
        bar.update(1)

    def fit(n: int, q_weight: float, label: str) -> None:
        if n <= 0:
            return
        impl.q_weight = q_weight
        bar.set_postfix_str(label)
        result = algo.fit(replay, n_steps=n, n_steps_per_epoch=n, show_progress=False,
                          logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=10**9, callback=on_step,
                          experiment_name="simreal_finetune", with_timestamp=False)
        metrics.update({k: float(v) for k, v in result[-1][1].items() if not k.startswith("time_")})

    fit(warmup, 0.0, "critic warm-up")
    fit(steps - warmup, 1.0, "TD3+BC")
    bar.close()
    final = _distance(policy, reference, states)
    logged_states = normalized(m, logged.observations)
    executed = np.clip(logged.actions, -clip, clip) / clip
    bc_logged = {"parent": float(np.mean(np.abs(reference.numpy(logged_states) - executed))),
                 "new": float(np.mean(np.abs(_actions_of(policy, logged_states) - executed)))}
    wall = time.monotonic() - t_start

    provenance = {
        "tool": "simreal finetune",
        "command": command or "",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "parent": {"name": m.name, "sha256": parent_hash, "path": str(bundle_dir.resolve()),
                   "training": m.provenance.get("training"), "randomization": m.provenance.get("randomization")},
        "datasets": datasets,
        "calibration": None if sim is None else {
            "randomization": sim_profile, "simulated_episodes": int(hp["sim_episodes"]),
            "simulated_transitions": len(sim), "exploration_noise_std": float(hp["sim_noise"]),
            "batch_share": float(hp["sim_ratio"])},
        "finetuning": {
            "library": f"d3rlpy {d3rlpy.__version__}", "algorithm": "TD3+BC",
            "method": "TD3+BC (twin critics, delayed actor) on the logged transitions"
                      + (" mixed with simulated ones (RLPD-style symmetric sampling)" if sim is not None else "")
                      + "; actor loss lambda*-Q + BC(logged actions) + ref_weight*|pi - pi_parent|^2 with the "
                        "parent frozen (its ONNX model through ONNX Runtime); critics alone for the warm-up steps",
            "initialization": init,
            "hyperparameters": {**{k: hp[k] for k in DEFAULTS}, "distill_steps": distill_steps,
                                "distill_lr": 1e-4, "critic_net": [256, 256], "actor_net": mlp.hidden if mlp else
                                [256, 256]},
            "transitions": {"logged": len(logged), "simulated": 0 if sim is None else len(sim)},
            "distance_to_parent": {"initial": before, "after_distillation": after_distill, "final": final},
            "mean_abs_to_logged_actions": bc_logged,
            "final_losses": metrics,
            "wall_time_s": round(wall, 1), "torch_threads": 1,
        },
    }
    manifest = _write_bundle(parent, bundle_dir, parent_hash, out, name, provenance,
                             lambda path: export_actor(policy, m.obs_dim, clip, path))
    return {"out": str(out), "name": manifest.name, "parent": m.name, "parent_sha256": parent_hash,
            "wall_time_s": round(wall, 1), **provenance["finetuning"]["transitions"],
            "distance_to_parent": provenance["finetuning"]["distance_to_parent"],
            "mean_abs_to_logged_actions": bc_logged}
