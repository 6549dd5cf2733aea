"""``simreal policy check BUNDLE``: offline checks of a policy bundle before it goes near a robot.

Checks, in order (each prints ``ok``/``FAIL`` with the reason; exit status 1 on any failure):

1. the manifest parses and is valid (errors name the key);
2. the manifest's joints, order and default pose match the robot;
3. the model loads and its input/output shapes match the manifest;
4. the actions cannot command motions beyond the robot's limits at the bundle's control rate
   (``scale*clip`` per period against the velocity limits for position actions, against the
   effort and torque-rate limits for torques; see :func:`simreal_ros.policy.action.command_reach`);
5. the shield command mode the action type needs (``position`` or ``effort``) is the one the
   shield runs in (``--command-mode``; default: the shipped ``config/shield.yaml``);
6. ``--samples`` random observations (normalised N(0, 1), clipped as at runtime, and raw
   observations of random joint states inside the limits) give finite outputs of the right shape;
7. the executor's cycle (observation + model + action) fits the control period: p99 compute
   time under the deadline (half a period) on this machine.

A malformed or hostile bundle is a ``FAIL`` line naming the key (exit status 1), never a traceback.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate a bundle against the robot and run it on random observations",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("bundle", help="bundle directory (or its manifest.yaml)")
    check.add_argument("--robot", default="panda", help="robot description name (default: panda)")
    check.add_argument("--samples", type=int, default=1000, help="random observations to run (default: 1000)")
    check.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    check.add_argument("--command-mode", choices=("position", "effort"), default=None,
                       help="the shield's command_mode the bundle will run under (default: the shipped "
                            "config/shield.yaml's)")


class _Report:
    def __init__(self) -> None:
        self.failed = 0

    def ok(self, what: str, detail: str = "") -> None:
        print(f"  ok    {what}" + (f": {detail}" if detail else ""))

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"  FAIL  {what}: {why}")


def run(args: argparse.Namespace) -> int:
    if args.policy_command == "check":
        return check(args.bundle, robot_name=args.robot, samples=args.samples, seed=args.seed,
                     command_mode=args.command_mode)
    raise ValueError(f"unknown policy action {args.policy_command!r}")  # pragma: no cover - argparse refuses it


def check(bundle_path: str, robot_name: str = "panda", samples: int = 1000, seed: int = 0,
          command_mode: str | None = None) -> int:
    """Run the checks (see module docstring); print a report; return the exit status."""
    from simreal_ros.policy.backends import make_backend
    from simreal_ros.policy.bundle import BundleError, PolicyBundle, check_robot, read_manifest
    from simreal_ros.robot import load_robot

    rep = _Report()
    print(f"policy bundle {bundle_path}")
    try:
        manifest, directory = read_manifest(bundle_path)
    except BundleError as exc:
        rep.fail("manifest", str(exc))
        return _done(rep)
    m = manifest
    rep.ok("manifest", f"'{m.name}', {m.backend} model {m.model_file}, {m.control_rate_hz:g} Hz, obs {m.obs_dim} "
                       f"({', '.join(f'{n}:{s}' for n, s in m.obs_terms)}), action {m.action_type} "
                       f"x{m.action_scale:g} clip {m.action_clip:g}")
    print(f"        provenance: {_provenance_line(m.provenance)}")
    try:
        robot = load_robot(robot_name)
    except ValueError as exc:  # RobotDescriptionError, ResourceNotFoundError
        rep.fail("robot", f"cannot load robot description '{robot_name}': {exc}")
        return _done(rep)
    try:
        check_robot(m, robot)
        rep.ok("robot", f"'{robot.name}' joints match {list(robot.joint_names)}; default pose inside limits")
    except BundleError as exc:
        rep.fail("robot", str(exc))
        return _done(rep)
    _check_reach(rep, m, robot)
    _check_command_mode(rep, m, command_mode)
    bundle = PolicyBundle(manifest=m, directory=directory)
    try:
        if not bundle.model_path.is_file():
            raise BundleError(f"model.file '{m.model_file}' does not exist ({bundle.model_path})")
        bundle.backend = make_backend(bundle)
        rep.ok("model", f"input [batch, {m.obs_dim}] -> output [batch, {m.action_dim}] ({bundle.backend.name})")
    except BundleError as exc:
        rep.fail("model", str(exc))
        return _done(rep)
    _check_outputs(rep, bundle, robot, samples, seed)
    if rep.failed == 0:
        _check_timing(rep, bundle, robot)
    return _done(rep)


def _provenance_line(prov: dict) -> str:
    """One bounded line: a few named values and the section names (never the whole provenance)."""
    from simreal_ros.policy.manifest_yaml import short_repr

    if not prov:
        return "none recorded (training config, randomization, seed, evaluation)"
    named = ", ".join(f"{k}={short_repr(prov[k], 60)}" for k in ("tool", "created", "seed") if k in prov)
    keys = sorted(str(k) for k in prov)
    sections = ", ".join(short_repr(k, 40) for k in keys[:12]) + (f", ... ({len(keys)} in all)" if len(keys) > 12
                                                                  else "")
    return f"{named or 'present'}; sections: [{sections}]"


def _span(values: np.ndarray, unit: str) -> str:
    lo, hi = float(np.min(values)), float(np.max(values))
    return f"{lo:.4g} {unit}" if np.isclose(lo, hi) else f"{lo:.4g}-{hi:.4g} {unit}"


def _check_reach(rep: _Report, m, robot) -> None:
    """The most the bundle's actions can command at its rate against the robot's limits."""
    from simreal_ros.policy.action import command_reach

    planar = (m.planar_frame(robot), m.action_planar["max_lead"]) if m.action_planar is not None else None
    for r in command_reach(robot, m.action_type, m.action_scale, m.action_clip, m.control_rate_hz, m.default_pose,
                           planar, m.action_max_change):
        what = f"{r.quantity} limits"
        head = (f"{m.action_type} scale {m.action_scale:g} x clip {m.action_clip:g} at {m.control_rate_hz:g} Hz: "
                f"{r.basis}, i.e. up to {_span(r.allowed, r.unit)}")
        if len(r.over):
            joints = ", ".join(f"{robot.joint_names[i]} {r.allowed[i]:.4g} > {r.limit[i]:.4g}" for i in r.over)
            rep.fail(what, f"{head}; robot '{robot.name}' {r.quantity} limits are {_span(r.limit, r.unit)}, "
                           f"exceeded at {joints} {r.unit}")
        else:
            share = float(np.max(r.allowed / r.limit))
            rep.ok(what, f"{head}; within robot '{robot.name}' {r.quantity} limits {_span(r.limit, r.unit)} "
                         f"(at most {100 * share:.0f}% of a limit)")


def _shipped_command_mode() -> tuple[str, str]:
    """The shield's ``command_mode`` in the shipped ``config/shield.yaml`` (and where it came from)."""
    import yaml

    from simreal_ros.resources import ResourceNotFoundError, resource

    try:
        path = resource("config", "shield.yaml")
        params = yaml.safe_load(path.read_text())["safety_shield"]["ros__parameters"]
        return str(params.get("command_mode", "position")), "config/shield.yaml"
    except (ResourceNotFoundError, OSError, yaml.YAMLError, KeyError, TypeError):
        return "position", "the shield's default"


def _check_command_mode(rep: _Report, m, command_mode: str | None) -> None:
    from simreal_ros.policy.action import COMMAND_MODE

    need = COMMAND_MODE[m.action_type]
    what = "joint torques (N m)" if need == "effort" else "joint position targets (rad)"
    have, source = (command_mode, "--command-mode") if command_mode else _shipped_command_mode()
    detail = f"{m.action_type} commands {what}: needs the shield's command_mode '{need}'"
    if have != need:
        rep.fail("command mode", f"{detail}, but {source} sets '{have}' (a {have}-mode shield would take these "
                                 f"outputs as {'torques' if have == 'effort' else 'joint targets'}); run it under a "
                                 f"shield with command_mode: {need} and check with --command-mode {need}")
    else:
        rep.ok("command mode", f"{detail} ({source}: '{have}')")


def _check_outputs(rep: _Report, bundle, robot, samples: int, seed: int) -> None:
    from simreal_ros.policy.observation import ObsInputs, build_observation, one_hot

    m = bundle.manifest
    rng = np.random.default_rng(seed)
    n_latent = dict(m.obs_terms).get("latent")  # an exploration family: every code in turn
    lim = robot.limits
    z = np.clip(rng.standard_normal((samples, m.obs_dim)), -m.obs_clip, m.obs_clip).astype(np.float32)
    raw = []
    for _ in range(max(1, samples // 10)):
        x = ObsInputs(q=rng.uniform(lim.position_min, lim.position_max), dq=rng.uniform(-lim.velocity, lim.velocity),
                      goal=rng.uniform([-0.8, -0.8, 0.0], [0.8, 0.8, 1.2]),
                      last_action=rng.uniform(-m.action_clip, m.action_clip, m.action_dim),
                      tool=rng.uniform([-0.8, -0.8, 0.0], [0.8, 0.8, 1.2]),
                      object=rng.uniform([-0.8, -0.8, 0.0], [0.8, 0.8, 1.2]),
                      latent=None if n_latent is None else one_hot(len(raw) % n_latent, n_latent))
        raw.append(m.normalize(build_observation(robot, m.term_names, x)))
    obs = np.concatenate([z, np.asarray(raw)])
    out = np.stack([bundle.backend(o) for o in obs])
    if out.shape != (len(obs), m.action_dim) or not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.all(np.isfinite(out), axis=-1))) if out.ndim == 2 else len(obs)
        rep.fail("outputs", f"{bad} of {len(obs)} random observations give non-finite or misshaped actions")
        return
    sat = float(np.mean(np.abs(out) > m.action_clip))
    rep.ok("outputs", f"{len(obs)} random observations -> finite actions, |a| max {np.abs(out).max():.3g}, "
                      f"{100 * sat:.0f}% beyond action.clip {m.action_clip:g}")


def _check_timing(rep: _Report, bundle, robot) -> None:
    from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor

    m = bundle.manifest
    ex = PolicyExecutor(bundle, robot, ExecutorConfig(compute_deadline=1e9, ood_revert=False))
    q = ex.planar.frame.rest if ex.planar is not None else robot.ready_pose
    fk = robot.fk(q)[:3, 3]
    ex.set_goal(fk + np.array([0.05, 0.0, -0.05]))
    if ex.latent_size is not None:
        ex.set_latent(0)
    times = []
    for k in range(500):
        ex.update_state(q, np.zeros(m.n_joints), k * ex.period)
        if "object_pose" in ex.inputs:
            ex.update_object(fk + np.array([0.1, 0.0, 0.0]), k * ex.period)
        t0 = time.perf_counter()
        ex.step(k * ex.period)
        times.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    deadline = 0.5e3 * ex.period
    detail = f"executor cycle p50 {p50:.3f} ms, p99 {p99:.3f} ms; deadline {deadline:.1f} ms at {m.control_rate_hz:g} Hz"
    if p99 > deadline:
        rep.fail("rate", detail + " (too slow for the control rate on this machine)")
    else:
        rep.ok("rate", detail)


def _done(rep: _Report) -> int:
    print("PASS" if rep.failed == 0 else f"FAILED ({rep.failed} check(s))")
    return 0 if rep.failed == 0 else 1
