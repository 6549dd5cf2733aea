"""``simreal loop --task push --real REAL.yaml --out DIR``: the whole cycle of issue 13 in simulation.

``REAL.yaml`` (a hidden "real" arm/table, :mod:`simreal_ros.sim.real_arm`) is used only as the sim
bridge's hidden parameters (and, at the end, as the evaluation's "real" condition); no step reads
it otherwise. Each step calls the existing step's Python API:

1. **session** -- one session of at most 20 goals through the whole graph (every node its own
   process, DDS, the recorder): the shipped bundle in shield mode ``shadow`` (the scripted pusher
   drives, the policy's proposals are recorded beside it). Why shadow: it is the safe stage, the
   one a bundle that has never driven this arm may run in; and the pusher's pushes show the
   contact (a policy that fails on this table would push rarely, or push the puck off). Or
   ``--session BAG``: a session recorded elsewhere (e.g. on the robot).
2. **dataset** -- :func:`simreal_ros.dataset.build.build` + :func:`simreal_ros.dataset.write`.
3. **calibrate** -- :func:`simreal_ros.calibrate.contact.fit_contact` (``--contact only``): puck-table
   friction, puck mass, tracker latency and noise; ``calibration.yaml`` with a profile centred on them.
4. **finetune** -- :func:`simreal_ros.finetune.finetune.finetune` (``--method``, default ``ppo``) in
   the calibrated simulator, held to the frozen parent.
5. **ope** -- :func:`simreal_ros.finetune.ope.ope` of the new bundle ``--against`` the parent.
6. **promote** -- :func:`simreal_ros.rollout.promote.promote`: to ``shadow`` on the OPE result, a
   shadow session of the new bundle through the graph on the hidden table, to ``blend`` on its bag,
   a blend session, to ``active`` on its summary. A refusal ends the rollout (recorded in the
   bundle); the loop still measures the bundle in simulation, and says at which stage it stopped.
7. **evaluate** -- parent and new bundle (and the pusher) on the hidden table, the same seeds,
   through the shield (:func:`simreal_ros.training.evaluate.run_episodes`).

Ends with one table (before vs after: success, the policy's own success, final error,
interventions, violations), written as ``DIR/loop.md`` and ``DIR/loop.json``, and ``DIR/loop.png``
(:mod:`simreal_ros.loop.report`).
A failed step stops the loop with one line naming the step (:class:`LoopError`); the frozen
reference (``--bundle``, default the shipped one) is hashed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from simreal_ros.cli import standalone_main

MAX_EPISODES = 20
STEPS = ("session", "dataset", "calibrate", "finetune", "ope", "promote", "evaluate")


class LoopError(RuntimeError):
    """A step failed (the message starts with the step's name)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from simreal_ros.finetune.finetune import METHODS
    from simreal_ros.training.tasks import TASK_NAMES

    p.add_argument("--task", choices=TASK_NAMES, default="push", help="the task (push: the contact loop)")
    p.add_argument("--real", required=True, metavar="REAL.yaml",
                   help="the hidden 'real' arm/table: only the sim bridge's hidden parameters (and the evaluation)")
    p.add_argument("--out", required=True, help="output directory (new or empty)")
    p.add_argument("--bundle", default=None, help="the frozen reference (default: the shipped policies/<task>_default)")
    p.add_argument("--episodes", type=int, default=MAX_EPISODES,
                   help=f"goals in each recorded session (at most {MAX_EPISODES}; default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sessions, the fine-tuning and the evaluation")
    p.add_argument("--session", default=None, metavar="BAG",
                   help="use this recorded session instead of recording the first one")
    p.add_argument("--method", choices=METHODS, default="ppo", help="fine-tuning method (default: %(default)s)")
    p.add_argument("--timesteps", type=int, default=None, help="--method ppo: environment steps (finetune's default)")
    p.add_argument("--value-warmup", type=int, default=None, help="--method ppo: value-only steps (finetune's default)")
    p.add_argument("--learning-rate", type=float, default=None, help="--method ppo: learning rate")
    p.add_argument("--ref-weight", type=float, default=None, help="weight of the term to the frozen parent")
    p.add_argument("--n-envs", type=int, default=None, help="--method ppo: parallel environments")
    p.add_argument("--log-std-init", type=float, default=None, help="--method ppo: log std of the exploration")
    p.add_argument("--intervention-penalty", type=float, default=None,
                   help="--method ppo: reward lost per cycle the shield changed")
    p.add_argument("--revert-penalty", type=float, default=None, help="--method ppo: reward lost at a shield revert")
    p.add_argument("--fqe-steps", type=int, default=None, help="OPE: FQE steps (ope's default)")
    from simreal_ros.loop.report import TARGET_SUCCESS

    p.add_argument("--target-success", type=float, default=TARGET_SUCCESS,
                   help="success the report measures the new bundle against, saying how far it got and why when "
                        "short (%(default)s: issue 13's acceptance)")
    p.add_argument("--eval-episodes", type=int, default=30, help="evaluation episodes per bundle (%(default)s)")
    p.add_argument("--eval-seed", type=int, default=10_000, help="first evaluation seed (%(default)s)")
    p.add_argument("--workers", type=int, default=2, help="evaluation worker processes (%(default)s)")
    p.add_argument("--promotion-config", default=None, help="promotion thresholds (default: config/promotion.yaml)")
    p.add_argument("--goal-timeout", type=float, default=None,
                   help="s allowed per goal in the recorded sessions (default: the task's episode length)")
    p.add_argument("--in-process", action="store_true", help="run each session's nodes in this one process")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


class _Log:
    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self.t0 = time.monotonic()

    def step(self, k: int, name: str, text: str) -> None:
        print(f"[{k}/{len(STEPS)} {name}] {text}  (+{time.monotonic() - self.t0:.0f} s)", flush=True)

    def note(self, text: str) -> None:
        print(f"    {text}", flush=True)


def _guard(step: str, fn: Callable[[], Any]) -> Any:
    """Run one step; its own refusals become one :class:`LoopError` line naming the step."""
    from simreal_ros.calibrate.contact_log import ContactInputError
    from simreal_ros.dataset import DatasetError
    from simreal_ros.finetune.data import DataError
    from simreal_ros.policy.bundle import BundleError
    from simreal_ros.rollout.evidence import EvidenceError
    from simreal_ros.rollout.promote import PromotionError

    try:
        return fn()
    except LoopError:
        raise
    except (DataError, DatasetError, ContactInputError, PromotionError, EvidenceError, BundleError, ValueError,
            OSError) as exc:
        raise LoopError(f"{step}: {exc}") from None


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LoopError(f"--out {out} exists and is not an empty directory (a loop's outputs are never overwritten)")


def record_session(name: str, bundle: Path, shield_mode: str, real: Path, out: Path, goals: int, seed: int,
                   goal_timeout: float, processes: bool, progress: bool) -> dict[str, Any]:
    """One session through the graph (:func:`simreal_ros.bringup.session.run_session`); its
    ``summary.json`` is written beside the bag (``out/<name>``). A session error is a LoopError."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before rclpy loads
    from simreal_ros.bringup.graph import GraphOptions, build_graph
    from simreal_ros.bringup.session import run_session

    opts = GraphOptions(task="push", policy=str(bundle), shield_mode=shield_mode, output_dir=str(out),
                        bag_name=name, real_arm=str(real), seed=seed)
    nodes = build_graph(opts)
    summary = run_session(nodes, opts, out / f"{name}_logs", goals=goals, duration=0.0, goal_timeout=goal_timeout,
                          processes=processes, progress=progress)
    path = out / f"{name}_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_file"] = str(path)
    if summary.get("error"):
        raise LoopError(f"session {name}: {summary['error']}")
    if not summary.get("bag"):
        raise LoopError(f"session {name}: the recorder wrote no bag under {out}")
    return summary


def evaluate_on_real(bundle: Path, real: Path, episodes: int, seed: int, workers: int, controller: str = "policy"
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``controller``'s episodes on the hidden table through the shield, as ``simreal evaluate --real``
    runs them; plus the policy's own success: an episode the shield reverted to the baseline counts
    as the policy's failure whatever the baseline then did (``simreal evaluate`` counts it by the
    puck at the end)."""
    from simreal_ros.training.evaluate import REAL_PREFIX, aggregate, run_episodes

    eps = run_episodes(bundle, f"{REAL_PREFIX}{real.resolve()}", controller, list(range(seed, seed + episodes)),
                       workers)
    agg = aggregate(eps)
    agg["success_rate_policy_own"] = agg["success_rate_own"] if controller == "policy" else agg["success_rate"]
    agg["final_distances_m"] = [float(e["final_distance"]) for e in eps]
    for e in eps:
        e.pop("distances", None)
    return agg, eps


def loop(args: argparse.Namespace) -> dict[str, Any]:
    from simreal_ros.finetune.data import bundle_hash
    from simreal_ros.loop.report import before_after_rows, print_summary, write_report
    from simreal_ros.policy.bundle import BundleError, load_bundle
    from simreal_ros.robot import load_robot
    from simreal_ros.sim.real_arm import load_real_arm
    from simreal_ros.training.tasks import task, task_of_manifest

    log = _Log(not args.no_progress)
    progress = not args.no_progress
    if args.task != "push":
        raise LoopError(f"--task {args.task}: the loop calibrates contact and so needs --task push")
    if not 1 <= args.episodes <= MAX_EPISODES:
        raise LoopError(f"--episodes {args.episodes}: one session of 1 to {MAX_EPISODES} goals")
    if args.eval_episodes < 1:
        raise LoopError(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    out = Path(args.out)
    _check_out(out)
    robot = load_robot()
    real = Path(args.real)
    try:
        load_real_arm(real, robot)
    except (ValueError, OSError) as exc:
        raise LoopError(f"--real {real}: {exc}") from None
    from simreal_ros.resources import resource

    parent = Path(args.bundle) if args.bundle else Path(resource("policies", f"{args.task}_default"))
    try:
        pm = load_bundle(parent, robot).manifest
    except BundleError as exc:
        raise LoopError(f"--bundle: {exc}") from None
    if task_of_manifest(pm) != args.task:
        raise LoopError(f"--bundle {parent}: '{pm.name}' is a {task_of_manifest(pm)} policy, not a {args.task} one")
    if args.session is not None and not Path(args.session).exists():
        raise LoopError(f"--session {args.session}: no such bag directory")
    frozen = bundle_hash(parent)
    out.mkdir(parents=True, exist_ok=True)
    probe = task(args.task).make_env()
    episode_s = probe.max_steps * probe.control_period
    success_radius = probe.task.success_radius
    probe.close()
    goal_timeout = args.goal_timeout or episode_s
    report: dict[str, Any] = {"task": args.task, "real": str(real.resolve()), "out": str(out.resolve()),
                              "reference": {"bundle": str(parent.resolve()), "name": pm.name, "sha256": frozen},
                              "episodes": args.episodes, "seed": args.seed, "success_radius_m": success_radius,
                              "steps": {}}
    t_start = time.monotonic()

    def done(name: str, t0: float, **figures: Any) -> None:
        report["steps"][name] = {"wall_time_s": round(time.monotonic() - t0, 1), **figures}

    # 1. session
    sessions = out / "sessions"
    sessions.mkdir(exist_ok=True)
    t0 = time.monotonic()
    if args.session is not None:
        bag = Path(args.session)
        log.step(1, "session", f"using the recorded session {bag}")
        done("session", t0, bag=str(bag), given=True)
    else:
        log.step(1, "session", f"{args.episodes} goals through the graph, '{pm.name}' in shadow mode (the pusher "
                 "drives), on the hidden table")
        s1 = _guard("session", lambda: record_session("s1_shadow", parent, "shadow", real, sessions, args.episodes,
                                                      args.seed, goal_timeout, not args.in_process, progress))
        bag = Path(s1["bag"])
        log.note(f"{s1['goals_reached']}/{s1['goals_attempted']} goals reached, {s1['interventions']} interventions, "
                 f"{s1['limit_violations']} limit violations; bag {bag}")
        done("session", t0, bag=str(bag), shield_mode="shadow", goals_attempted=s1["goals_attempted"],
             goals_reached=s1["goals_reached"], interventions=s1["interventions"],
             limit_violations=s1["limit_violations"], summary=s1["summary_file"])

    # 2. dataset
    t0 = time.monotonic()
    log.step(2, "dataset", f"{bag} -> {out / 'dataset'}")

    def make_dataset() -> Any:
        from simreal_ros.dataset import write
        from simreal_ros.dataset.build import BuildOptions, build

        t = build([bag], BuildOptions(bundle=str(parent)))
        write(t, out / "dataset")
        return t

    ds = _guard("dataset", make_dataset)
    from simreal_ros.finetune.data import check_against_bundle

    _guard("dataset", lambda: check_against_bundle(ds.meta, pm, args.task, str(out / "dataset")))
    log.note(f"{len(ds)} transitions in {len(ds.episode_starts)} episodes ({int(ds.terminals.sum())} terminal), "
             f"observations {ds.meta.observation_source}")
    done("dataset", t0, path=str(out / "dataset"), transitions=len(ds), episodes=int(len(ds.episode_starts)),
         terminals=int(ds.terminals.sum()), observation_source=ds.meta.observation_source)

    # 3. calibrate (contact only)
    t0 = time.monotonic()
    cal_dir = out / "calibration"
    log.step(3, "calibrate", f"contact (friction, puck mass, tracker latency and noise) from {bag.name}")

    def calibrate() -> Any:
        from simreal_ros.calibrate.contact import fit_contact
        from simreal_ros.calibrate.contact_log import read_push_bag
        from simreal_ros.calibrate.outputs import write_outputs

        cc = fit_contact([read_push_bag(bag, robot)])
        paths = write_outputs(None, cal_dir, contact=cc)
        return cc, paths

    cc, cal_paths = _guard("calibrate", calibrate)
    cal_file = Path(cal_paths.get("calibration", cal_dir / "calibration.yaml"))
    est = {k: e.as_dict() for k, e in cc.estimates.items()}
    for e in cc.estimates.values():
        log.note(f"{e.name}: {e.value:.4g} +- {e.std:.2g} {e.unit} (prior {e.prior:.3g})" if e.identified
                 else f"{e.name}: not identified: {e.reason}")
    done("calibrate", t0, file=str(cal_file), estimates=est, pushes=len(cc.segments))

    # 4. finetune
    t0 = time.monotonic()
    new = out / "policy"
    log.step(4, "finetune", f"--method {args.method} in the calibrated simulator, held to '{pm.name}'")

    def tune() -> dict[str, Any]:
        from simreal_ros.finetune.finetune import finetune

        kw: dict[str, Any] = {"ref_weight": args.ref_weight}
        if args.method == "ppo":
            kw.update(timesteps=args.timesteps, value_warmup=args.value_warmup, learning_rate=args.learning_rate,
                      n_envs=args.n_envs, log_std_init=args.log_std_init,
                      intervention_penalty=args.intervention_penalty, revert_penalty=args.revert_penalty)
        return finetune(parent, [out / "dataset"], new, randomization=str(cal_file), name=f"{pm.name}_loop",
                        seed=args.seed, progress=progress, method=args.method,
                        command=f"simreal loop (finetune step) --out {out}", **kw)

    ft = _guard("finetune", tune)
    log.note(f"{ft['name']} in {ft['wall_time_s']:.0f} s; mean |action - parent's| on the logged states "
             f"{ft['distance_to_parent']['final']['mean_abs']:.3f}")
    from simreal_ros.policy.bundle import read_manifest

    ftp = read_manifest(new)[0].provenance.get("finetuning", {})
    report["finetune"] = {"bundle": str(new), "method": args.method, "wall_time_s": ft["wall_time_s"],
                          "distance_to_parent": ft["distance_to_parent"], "phases": ft.get("phases"),
                          "training_curve": ftp.get("training_curve"), "hyperparameters": ftp.get("hyperparameters")}
    done("finetune", t0, bundle=str(new))

    # 5. ope
    t0 = time.monotonic()
    log.step(5, "ope", f"FQE and the shield replay of '{ft['name']}' against '{pm.name}' on the logged data")

    def judge() -> dict[str, Any]:
        from simreal_ros.finetune.ope import ope

        return ope(new, [out / "dataset"], against=parent, seed=args.seed, out=out / "ope.json", progress=progress,
                   fqe_steps=args.fqe_steps)

    rep = _guard("ope", judge)
    pol, par = rep["policies"]["policy"], rep["policies"]["against"]
    log.note(f"FQE {pol['fqe_value_mean']:.2f} {pol['fqe_value_ci95']} vs parent {par['fqe_value_mean']:.2f} "
             f"{par['fqe_value_ci95']}; replay: {pol['replay']['predicted_limit_violations']} predicted violations, "
             f"{pol['replay']['shield_interventions_per_100_commands']:.2f} interventions/100")
    evidence_ope = out / "ope.json"  # simreal ope's report is the promotion's OPE evidence as it is
    done("ope", t0, file=str(out / "ope.json"), evidence=str(evidence_ope),
         fqe={"new": pol["fqe_value_ci95"], "parent": par["fqe_value_ci95"]},
         predicted_violations=pol["replay"]["predicted_limit_violations"])

    # 6. promote: shadow -> blend -> active, with sessions through the graph on the hidden table
    t0 = time.monotonic()
    from simreal_ros.rollout.promote import PromotionConfig, promote

    config = _guard("promote", lambda: PromotionConfig.from_file(args.promotion_config))
    stages: list[dict[str, Any]] = []
    stage = "none"
    evidence: list[str] = [str(evidence_ope)]
    for target in ("shadow", "blend", "active"):
        if target == "blend":
            log.step(6, "promote", f"shadow session of '{ft['name']}' ({args.episodes} goals, the pusher drives)")
            s = _guard("promote", lambda: record_session("s2_shadow_new", new, "shadow", real, sessions,
                                                         args.episodes, args.seed + 1, goal_timeout,
                                                         not args.in_process, progress))
            evidence = [s["bag"]]
            stages[-1]["session"] = _session_figures(s)
        elif target == "active":
            goals = max(args.episodes, config.min_blend_goals)
            log.step(6, "promote", f"blend session of '{ft['name']}' ({goals} goals)")
            s = _guard("promote", lambda g=goals: record_session("s3_blend_new", new, "blend", real, sessions, g,
                                                                 args.seed + 2, goal_timeout, not args.in_process,
                                                                 progress))
            evidence = [s["summary_file"]]
            stages[-1]["session"] = _session_figures(s)
        d = _guard("promote", lambda t=target, e=evidence: promote(new, t, e, config,
                                                                   command=f"simreal loop (promote step) --out {out}"))
        log.step(6, "promote", f"'{ft['name']}' {d.from_stage} -> {target}: {d.decision.upper()}")
        for c in d.criteria:
            log.note(c.line().strip())
        stages.append({"to": target, "decision": d.decision, "evidence": evidence,
                       "criteria": [c.record() for c in d.criteria]})
        if not d.moved:
            break
        stage = target
    report["rollout"] = {"stage_reached": stage, "decisions": stages}
    done("promote", t0, stage_reached=stage)

    # 7. evaluate
    t0 = time.monotonic()
    log.step(7, "evaluate", f"'{pm.name}' vs '{ft['name']}' (and the pusher), {args.eval_episodes} episodes each on "
             f"the hidden table, seeds from {args.eval_seed}, through the shield")
    ev: dict[str, Any] = {}
    for key, b, ctl in (("parent", parent, "policy"), ("new", new, "policy"), ("baseline", parent, "baseline")):
        agg, _ = _guard("evaluate", lambda b=b, ctl=ctl: evaluate_on_real(b, real, args.eval_episodes, args.eval_seed,
                                                                           args.workers, ctl))
        ev[key] = agg
        log.note(f"{key}: success {100 * agg['success_rate']:.0f} % (the policy's own {100 * agg['success_rate_policy_own']:.0f} "
                 f"%), median final error {1e3 * agg['final_distance_median_m']:.1f} mm, "
                 f"{agg['limit_violations']} violations")
    report["evaluation"] = ev
    done("evaluate", t0, episodes=args.eval_episodes, seeds=[args.eval_seed, args.eval_seed + args.eval_episodes - 1])

    rows = before_after_rows(pm.name, ft["name"], stage, ev)
    report["table"] = rows
    after = read_manifest(new)[0]
    report["new_bundle"] = {"path": str(new), "name": after.name, "sha256": bundle_hash(new),
                            "stage": stage}
    report["reference"]["sha256_after"] = bundle_hash(parent)
    report["reference"]["unchanged"] = report["reference"]["sha256_after"] == frozen
    report["wall_time_s"] = round(time.monotonic() - t_start, 1)
    write_report(report, rows, out, real.name, args.eval_episodes, args.eval_seed, stage, args.target_success)
    if not report["reference"]["unchanged"]:
        raise LoopError(f"the frozen reference {parent} changed during the loop (sha256 {frozen[:12]} -> "
                        f"{report['reference']['sha256_after'][:12]})")
    print_summary(rows, out)
    for line in report["target"]["lines"]:
        print(f"  {line}")
    return report


def _session_figures(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s.get(k) for k in ("bag", "summary_file", "shield_mode", "goals_attempted", "goals_reached",
                                  "success_rate", "interventions", "limit_violations")}


def run(args: argparse.Namespace) -> int:
    try:
        loop(args)
    except LoopError as exc:
        print(f"simreal loop: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main("loop", sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
