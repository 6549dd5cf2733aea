"""``simreal ope NEW --data DS [DS ...] [--against PARENT]``: judge a policy on logged data before it drives.

1. Fitted-Q evaluation (d3rlpy's FQE): a Q-function of the bundle's policy (its ONNX model through
   ONNX Runtime gives the next actions) fitted on the logged transitions; the estimate is the mean
   of ``Q(s0, pi(s0))`` over the logged episodes' first states, with a percentile bootstrap
   confidence interval over episodes (``--bootstrap`` resamples). The interval covers which
   episodes were logged, not the FQE fit's own error (one fit per policy). With ``--against`` the
   parent is evaluated the same way on the same data, and the difference gets a paired interval
   (the same resampled episodes). The logged behaviour's own discounted return is shown beside it.
2. Replay on the logged states, one step at a time: what the policy would have proposed (against
   what was executed and, where logged, what the logging policy proposed); that proposal turned
   into a command as the executor does (a planar action moves the tool reference from where the
   logged run had it) and given to the real shield core (:class:`simreal_ros.training.shielding.EpisodeShield`,
   the deployed settings) in the state the logged commands had left it in: how often the shield
   would have intervened, on which limits, and whether the command it would then have sent
   violates a limit after the ones sent before it (:func:`simreal_ros.shield.limits.check_limits`).
   The logged commands' own interventions on the same shield are beside it. The OOD monitor
   (:class:`simreal_ros.policy.ood.OodMonitor`, the executor's settings) runs on every logged
   observation against the bundle's training statistics.

The states are the logged ones: a one-step counterfactual. The policy's commands do not move the
replayed arm, so the replay says what the policy would do where the logging controller went, not
where it would itself go (that needs the simulator: ``simreal evaluate``).

Writes ``--out`` (JSON, default ``ope.json``) and prints a table. Exit status 0; 2 for bad input
(the error names it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from simreal_ros.cli import standalone_main
from simreal_ros.finetune.data import DataError, Steps

#: measured against Monte Carlo returns (bench/bench_ope_mc.py, README "Fine-tuning from logged
#: sessions"): 2000 steps at learning rate 1e-4 and gamma 0.99 left the shipped push policy's value
#: at -0.7 for a true 5.1; 6000 steps at 3e-4 with the task's gamma came within 25 %. gamma None:
#: :func:`task_gamma` of the bundle's task.
DEFAULTS: dict[str, Any] = {"fqe_steps": 6000, "bootstrap": 1000, "batch_size": 256, "fqe_lr": 3e-4,
                            "target_update_interval": 100, "gamma": None}
#: the weight the task's discount leaves at the episode's time limit (see :func:`task_gamma`)
HORIZON_WEIGHT = 0.05


def task_gamma(task_name: str) -> float:
    """The discount consistent with a task's episode length: ``gamma ** max_steps = HORIZON_WEIGHT``,
    so what FQE bootstraps past the env's time limit weighs little."""
    from simreal_ros.training.tasks import task

    env = task(task_name).make_env()
    try:
        n = int(env.max_steps)
    finally:
        env.close()
    return float(HORIZON_WEIGHT ** (1.0 / n))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="the policy bundle to judge")
    p.add_argument("--data", nargs="+", required=True, metavar="DS", help="datasets written by `simreal dataset`")
    p.add_argument("--against", default=None, metavar="PARENT", help="also judge this bundle on the same data")
    p.add_argument("--fqe-steps", type=int, default=DEFAULTS["fqe_steps"], help="FQE gradient steps (%(default)s)")
    p.add_argument("--bootstrap", type=int, default=DEFAULTS["bootstrap"],
                   help="bootstrap resamples of the episodes (%(default)s)")
    p.add_argument("--gamma", type=float, default=DEFAULTS["gamma"],
                   help="discount (default: the task's, whose weight at the episode's time limit is "
                        f"{HORIZON_WEIGHT:g}: push 0.975, reach 0.970)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="ope.json", help="report file (%(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


class _PolicyImpl:
    """What d3rlpy's FQE asks of the evaluated algorithm: its action at (normalized) states."""

    def __init__(self, reference) -> None:
        self.reference = reference

    def predict_best_action(self, x):
        return self.reference(x)


class _Policy:
    def __init__(self, reference) -> None:
        self.impl = _PolicyImpl(reference)


def _ci(values: np.ndarray, level: float = 0.95) -> list[float]:
    return [float(np.percentile(values, 100 * (1 - level) / 2)), float(np.percentile(values, 100 * (1 + level) / 2))]


def discounted_returns(steps: Steps, gamma: float) -> np.ndarray:
    """The logged discounted return from each episode's first state."""
    out = []
    for a, b in steps.episode_bounds:
        r = steps.rewards[a:b]
        out.append(float(np.sum(r * gamma ** np.arange(len(r)))))
    return np.asarray(out)


def fqe_start_values(bundle, steps: Steps, *, n_steps: int, gamma: float, batch_size: int, lr: float,
                     target_update_interval: int, seed: int, bar=None) -> np.ndarray:
    """FQE of ``bundle``'s policy on ``steps``: ``Q(s0, pi(s0))`` of each episode's first state."""
    import d3rlpy
    import torch
    from d3rlpy.dataset import InfiniteBuffer, ReplayBuffer

    from simreal_ros.finetune.data import episodes_for_d3rlpy, normalized
    from simreal_ros.finetune.networks import Reference
    from simreal_ros.finetune.td3bc import quiet_d3rlpy

    torch.set_num_threads(1)
    quiet_d3rlpy()
    d3rlpy.seed(seed)
    m = bundle.manifest
    clip = float(m.action_clip)
    eps = episodes_for_d3rlpy(steps, m)
    for e in eps:
        object.__setattr__(e, "actions", (e.actions / clip).astype(np.float32))
    buf = ReplayBuffer(InfiniteBuffer(), episodes=eps)
    reference = Reference(bundle)
    fqe = d3rlpy.ope.FQE(algo=_Policy(reference), config=d3rlpy.ope.FQEConfig(
        batch_size=batch_size, gamma=gamma, learning_rate=lr, target_update_interval=target_update_interval),
        device="cpu:0")
    fqe.fit(buf, n_steps=n_steps, n_steps_per_epoch=n_steps, show_progress=False,
            logger_adapter=d3rlpy.logging.NoopAdapterFactory(), save_interval=10**9,
            callback=(lambda *_: bar.update(1)) if bar is not None else None, experiment_name="simreal_ope",
            with_timestamp=False)
    s0 = normalized(m, steps.observations[[a for a, _ in steps.episode_bounds]])
    return np.asarray(fqe.predict_value(s0, reference.numpy(s0).astype(np.float32)), dtype=float).ravel()


def _commands(robot, manifest, planar_ref, q: np.ndarray, action: np.ndarray) -> np.ndarray:
    from simreal_ros.policy.action import action_to_command

    a = np.clip(action, -manifest.action_clip, manifest.action_clip)
    if planar_ref is not None:
        return planar_ref.step(q, manifest.action_scale * a)
    return action_to_command(robot, manifest.action_type, a, manifest.action_scale, manifest.action_clip, q,
                             manifest.default_pose)


def replay(bundle, steps: Steps, robot) -> dict[str, Any]:
    """The replay validation of the module docstring, for ``bundle`` on ``steps``."""
    from simreal_ros.finetune.data import normalized
    from simreal_ros.policy.executor import ExecutorConfig
    from simreal_ros.policy.ood import OodMonitor
    from simreal_ros.robot.planar import PlanarReference
    from simreal_ros.shield.limits import check_limits
    from simreal_ros.training.shielding import EpisodeShield

    m = bundle.manifest
    sl = m.term_slices()
    if "joint_pos" not in sl or "joint_vel" not in sl:
        raise DataError(f"bundle '{m.name}' does not observe joint_pos and joint_vel: the replay cannot rebuild "
                        "the arm's state from the logged observations")
    period = 1.0 / m.control_rate_hz
    proposals = np.clip(np.asarray(bundle.infer(normalized(m, steps.observations)), dtype=float),
                        -m.action_clip, m.action_clip)
    ex = ExecutorConfig()
    kinds: dict[str, int] = {}
    viol_kinds: dict[str, int] = {}
    interventions = commands = not_policy = ood_excursions = ood_alarms = logged_interventions = 0
    term_excursions: dict[str, int] = {n: 0 for n in sl}
    episodes_with_interventions = 0
    for a, b in steps.episode_bounds:
        obs = steps.observations[a:b]
        qs = obs[:, sl["joint_pos"]] + robot.ready_pose
        dqs = obs[:, sl["joint_vel"]]
        t = steps.stamps[a:b].astype(float)
        if len(t) > 1 and not np.all(np.diff(t) > 0):
            t = period * np.arange(b - a)
        t = t - t[0] + 1.0  # the shield's clock starts after its first held period
        logged_shield = EpisodeShield(robot, period, mode="active")
        planar = m.action_type == "tool_planar_delta"
        new_ref = PlanarReference(robot, m.planar_frame(robot), m.action_planar["max_lead"]) if planar else None
        old_ref = PlanarReference(robot, m.planar_frame(robot), m.action_planar["max_lead"]) if planar else None
        ood = OodMonitor(sl, m.obs_mean, m.obs_std, ex.ood_threshold, ex.ood_window, ex.ood_min_count)
        sent, times = [qs[0].copy()], [t[0] - period]
        hit = False
        for i in range(b - a):
            q, dq, now = qs[i], dqs[i], float(t[i])
            if planar:  # the new policy moves the reference from where the logged run had it
                new_ref.point = None if old_ref.point is None else old_ref.point.copy()
            cmd = _commands(robot, m, new_ref, q, proposals[a + i])
            logged_cmd = _commands(robot, m, old_ref, q, steps.actions[a + i])
            probe = copy.deepcopy(logged_shield)  # the shield as the logged commands left it
            out = probe.step(now, q, dq, now, cmd, logged_cmd)
            passed = logged_shield.step(now, q, dq, now, logged_cmd, logged_cmd)
            logged_interventions += bool(passed.kinds)
            commands += 1
            if out.kinds:
                interventions += 1
                hit = True
                for k in out.kinds:
                    kinds[k] = kinds.get(k, 0) + 1
            if out.source != "policy":
                not_policy += 1
            sc = probe.config  # the command it would send, after the ones sent before it
            for v in check_limits(robot, times[-3:] + [now], np.asarray(sent[-3:] + [np.asarray(out.command)]),
                                  max_step_gap=sc.max_step_gap, min_step=sc.min_step,
                                  position_margin=sc.position_margin, starts_at_rest=len(sent) < 3):
                if v.index == len(times[-3:]):
                    viol_kinds[v.kind] = viol_kinds.get(v.kind, 0) + 1
            sent.append(np.asarray(passed.command, dtype=float))
            times.append(now)
            rep = ood.update(obs[i])
            ood_excursions += int(rep.excursion)
            ood_alarms += int(rep.raised)
            for n in rep.terms_over:
                term_excursions[n] += 1
        episodes_with_interventions += int(hit)
    executed = np.clip(steps.actions, -m.action_clip, m.action_clip)
    has = steps.has_proposal.astype(bool)
    return {
        "transitions": len(steps), "episodes": len(steps.episode_bounds),
        "proposal_mean_abs_diff_to_executed": float(np.mean(np.abs(proposals - executed))),
        "proposal_mean_abs_diff_to_logged_proposals":
            float(np.mean(np.abs(proposals[has] - steps.proposed_actions[has]))) if has.any() else None,
        "shield_interventions": interventions,
        "shield_interventions_per_100_commands": 100.0 * interventions / max(1, commands),
        "episodes_with_interventions": episodes_with_interventions,
        "shield_intervention_kinds": kinds,
        "cycles_not_driven_by_policy": not_policy,
        "logged_commands_interventions_per_100": 100.0 * logged_interventions / max(1, commands),
        "predicted_limit_violations": int(sum(viol_kinds.values())),
        "predicted_limit_violation_kinds": viol_kinds,
        "ood_threshold": ex.ood_threshold,
        "ood_excursion_rate": ood_excursions / max(1, len(steps)),
        "ood_alarms": ood_alarms,
        "ood_excursions_by_term": {k: v for k, v in term_excursions.items() if v},
    }


def ope(bundle: str | Path, data: list[str | Path] | Steps, *, against: str | Path | None = None,
        seed: int = 0, out: str | Path | None = None, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """FQE with a bootstrap interval and the replay validation; returns the report (written to ``out``)."""
    from tqdm import tqdm

    from simreal_ros.finetune.data import bundle_hash, load_logged
    from simreal_ros.policy.bundle import BundleError, load_bundle
    from simreal_ros.robot import load_robot
    from simreal_ros.rollout.stage import policy_hash
    from simreal_ros.training.tasks import task_of_manifest

    hp = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    if int(hp["fqe_steps"]) < 1 or int(hp["bootstrap"]) < 1:
        raise DataError(f"--fqe-steps and --bootstrap must be >= 1, got {hp['fqe_steps']} and {hp['bootstrap']}")
    if hp["gamma"] is not None and not 0 < hp["gamma"] < 1:
        raise DataError(f"--gamma must be in (0, 1), got {hp['gamma']}")
    t0 = time.monotonic()
    robot = load_robot()
    paths = [Path(bundle)] + ([Path(against)] if against is not None else [])
    try:
        bundles = [load_bundle(p, robot) for p in paths]
    except BundleError as exc:
        raise DataError(str(exc)) from None
    task_name = task_of_manifest(bundles[0].manifest)
    if len(bundles) > 1 and task_of_manifest(bundles[1].manifest) != task_name:
        raise DataError(f"--against {against} is a {task_of_manifest(bundles[1].manifest)} policy, "
                        f"{bundle} a {task_name} one")
    if isinstance(data, Steps):
        steps, datasets = data, [{"in_memory": True, "transitions": len(data)}]
        if not len(data):
            raise DataError("the transitions given have no rows")
    else:
        steps, datasets = load_logged(data, bundles[0].manifest, task_name)
        for b in bundles[1:]:
            load_logged(data, b.manifest, task_name)  # the parent must fit the data too
    gamma = task_gamma(task_name) if hp["gamma"] is None else float(hp["gamma"])
    bar = tqdm(total=len(bundles) * int(hp["fqe_steps"]), desc="simreal ope", unit="step", disable=not progress,
               dynamic_ncols=True)
    values = [fqe_start_values(b, steps, n_steps=int(hp["fqe_steps"]), gamma=gamma,
                               batch_size=int(hp["batch_size"]), lr=float(hp["fqe_lr"]),
                               target_update_interval=int(hp["target_update_interval"]), seed=seed, bar=bar)
              for b in bundles]
    bar.close()
    returns = discounted_returns(steps, gamma)
    rng = np.random.default_rng(seed)
    n_ep = len(returns)
    idx = rng.integers(0, n_ep, size=(int(hp["bootstrap"]), n_ep))
    report: dict[str, Any] = {
        "task": task_name, "datasets": datasets, "transitions": len(steps), "episodes": n_ep, "gamma": gamma,
        "fqe": {"library": "d3rlpy", "steps": int(hp["fqe_steps"]), "batch_size": int(hp["batch_size"]),
                "learning_rate": float(hp["fqe_lr"]), "target_update_interval": int(hp["target_update_interval"]),
                "bootstrap_resamples": int(hp["bootstrap"]), "confidence": 0.95,
                "interval_over": "logged episodes (the FQE fit's own error is not in it)"},
        "behaviour": {"discounted_return_mean": float(returns.mean()),
                      "discounted_return_ci95": _ci(returns[idx].mean(axis=1))},
        "policies": {},
    }
    for role, b, v in zip(("policy", "against"), bundles, values):
        report["policies"][role] = {
            "bundle": str(b.directory), "name": b.manifest.name, "sha256": bundle_hash(b.directory),
            "policy_hash": policy_hash(b.directory),  # what simreal promote binds the evidence to
            "fqe_value_mean": float(v.mean()), "fqe_value_ci95": _ci(v[idx].mean(axis=1)),
            "replay": replay(b, steps, robot)}
    if len(values) > 1:
        diff = values[0] - values[1]
        report["difference"] = {"fqe_value_mean": float(diff.mean()), "fqe_value_ci95": _ci(diff[idx].mean(axis=1))}
    report["wall_time_s"] = round(time.monotonic() - t0, 1)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        report["file"] = str(out)
    return report


def print_table(report: dict[str, Any]) -> None:
    pols = report["policies"]
    roles = list(pols)
    print(f"\n{report['task']}: {report['transitions']} logged transitions in {report['episodes']} episodes, "
          f"gamma {report['gamma']}")
    print(f"  {'':40s}" + "".join(f"{pols[r]['name'][:18]:>20s}" for r in roles))

    def row(label: str, fn) -> None:
        print(f"  {label:40s}" + "".join(f"{fn(pols[r]):>20s}" for r in roles))

    row("FQE value (mean of episode starts)", lambda p: f"{p['fqe_value_mean']:.2f}")
    row("  95% CI", lambda p: "[{:.2f}, {:.2f}]".format(*p["fqe_value_ci95"]))
    rp = "replay"
    row("|proposal - executed| (mean)", lambda p: f"{p[rp]['proposal_mean_abs_diff_to_executed']:.3f}")
    row("shield interventions / 100 commands", lambda p: f"{p[rp]['shield_interventions_per_100_commands']:.2f}")
    row("intervention kinds", lambda p: ",".join(f"{k}:{v}" for k, v in sorted(
        p[rp]["shield_intervention_kinds"].items())) or "-")
    row("predicted limit violations", lambda p: str(p[rp]["predicted_limit_violations"]))
    row("OOD excursion rate / alarms", lambda p: f"{p[rp]['ood_excursion_rate']:.3f} / {p[rp]['ood_alarms']}")
    b = report["behaviour"]
    print(f"  logged behaviour's discounted return: {b['discounted_return_mean']:.2f} "
          f"[{b['discounted_return_ci95'][0]:.2f}, {b['discounted_return_ci95'][1]:.2f}]")
    if "difference" in report:
        d = report["difference"]
        print(f"  FQE difference (policy - against): {d['fqe_value_mean']:.2f} "
              f"[{d['fqe_value_ci95'][0]:.2f}, {d['fqe_value_ci95'][1]:.2f}]")


def run(args: argparse.Namespace) -> int:
    try:
        report = ope(args.bundle, args.data, against=args.against, seed=args.seed, out=args.out,
                     progress=not args.no_progress, fqe_steps=args.fqe_steps, bootstrap=args.bootstrap,
                     gamma=args.gamma)
    except (DataError, ValueError) as exc:
        print(f"simreal ope: error: {exc}", file=sys.stderr)
        return 2
    print_table(report)
    print(f"\nwritten: {report['file']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main("ope", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
