"""Identify the simulator from recorded sessions with ``mujoco.sysid`` (ROS-free).

:func:`fit` replays the commands the shield sent through the package's MuJoCo arm
(:mod:`~simreal_ros.calibrate.replay`: zero-order hold on the physics grid from when each
command reached the arm, as the sim bridge holds them), compares the simulated joint
positions, velocities and efforts with the measured ones, and lets the toolbox's bounded
Gauss-Newton (``mujoco.sysid.optimize``, ``mujoco.minimize`` underneath, finite-difference
Jacobians from batched ``mujoco.rollout``) move the parameters of
:mod:`~simreal_ros.calibrate.params`, in stages (:mod:`~simreal_ros.calibrate.stages`: the
joint and payload parameters first on a share of the data, then the link inertias too, then
everything on all of it). Intervals come from the toolbox's ``calculate_intervals`` (the
covariance at the optimum, :mod:`~simreal_ros.calibrate.intervals`). What the data cannot tell
is never given a value: a joint that did not move keeps its friction, damping, armature and
gains at the prior (frozen, with the reason); a parameter whose interval stays wide is
reported as not identified. The link inertias carry a weak prior at the URDF's values, so the
directions of the inertial parameters that the motion does not excite stay there (robot
inertial parameters are only identifiable as combinations, the base parameters).

Each session is split by time: the first ``1 - holdout`` is fitted (in chunks of
``chunk_duration``, each starting from its measured state), the rest is replayed with the prior
and the fitted model and scored (RMSE per joint).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from mujoco import sysid

from simreal_ros import __version__
from simreal_ros.calibrate import stages as staging
from simreal_ros.calibrate.intervals import Estimate, estimates, observation_latency
from simreal_ros.calibrate.params import KINDS, unidentifiable
from simreal_ros.calibrate.replay import EffortAverage, Replay, ReplayScore, cut_chunks
from simreal_ros.calibrate.session import Session, SessionError, SourceInfo
from simreal_ros.robot import RobotModel, load_robot
from simreal_ros.settings import setting, validate_fields
from simreal_ros.sim.arm import physics_dt_setting

__all__ = ["KINDS", "Calibration", "Estimate", "FitConfig", "ReplayScore", "fit"]

COMMAND_CLOCKS = ("stamp", "arm")


def _kinds_ok(v: tuple[str, ...]) -> str | None:
    bad = [k for k in v if k not in KINDS]
    return f"unknown parameter kind(s) {bad} (known: {list(KINDS)})" if bad else None


@dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit` (each declared once; ``simreal calibrate fit`` derives its options)."""

    physics_dt: float = physics_dt_setting()
    parameters: tuple[str, ...] = setting(KINDS, "parameter kinds to identify (the rest stay at the prior)",
                                          check=_kinds_ok)
    holdout_fraction: float = setting(0.25, "last share of every session kept out of the fit and scored",
                                      low=0.05, high=0.9)
    chunk_duration: float = setting(5.0, "the fitted part is replayed in chunks of this length, each from its "
                                    "measured state", unit="s", low=0.5, high=600.0)
    burn_in: float = setting(0.5, "the first seconds of every chunk are replayed but not compared (the measured "
                             "initial state is noisy, and a joint held by friction keeps that error until it slips)",
                             unit="s", low=0.0, high=60.0)
    residual_period: float = setting(0.005, "time between compared samples (a multiple of physics_dt)", unit="s",
                                     low=1e-4, high=0.1)
    min_fit_duration: float = setting(4.0, "shortest fitted part of all sessions together", unit="s", low=0.1,
                                      high=3600.0)
    max_state_gap: float = setting(0.05, "longest gap between joint states inside a session", unit="s",
                                   low=1e-3, high=10.0)
    command_clock: str = setting("arm", "when a sent command took effect: 'arm' (at the start of the driver's cycle "
                                 "that first published a state after the command arrived, from the recorder's "
                                 "receive times: right also for a paced simulator that falls behind its stamps) or "
                                 "'stamp' (the shield's stamps as they are)", choices=COMMAND_CLOCKS)
    transport: float = setting(3e-4, "command_clock 'arm': time a message takes between two processes (a sent "
                               "command to the driver, a state to the recorder)", unit="s", low=0.0, high=0.05)
    position_scale: float = setting(1e-3, "residual scale of joint positions (1/weight)", unit="rad",
                                    low=0.0, low_open=True, high=1.0)
    velocity_scale: float = setting(0.05, "residual scale of joint velocities (1/weight)", unit="rad/s",
                                    low=0.0, low_open=True, high=10.0)
    effort_scale: float = setting(0.5, "residual scale of joint efforts (1/weight)", unit="N m",
                                  low=0.0, low_open=True, high=100.0)
    min_joint_speed: float = setting(0.05, "a joint whose peak speed stays below this did not move: its friction, "
                                     "damping, armature and gains are not identified", unit="rad/s", low=0.0,
                                     high=10.0)
    inertia_prior_std: float = setting(0.5, "prior std of the link inertias' log-Cholesky parameters around the "
                                       "URDF's", low=0.0, low_open=True, high=100.0)
    short_share: float = setting(0.34, "share of the fitted chunks (spread over the sessions) that the first stages "
                                 "replay (1: every stage replays all)", low=0.0, low_open=True, high=1.0)
    stage1_iters: int = setting(20, "Gauss-Newton iterations at most of stage 1 (all but the link inertias)",
                                low=1, high=1000)
    stage2_iters: int = setting(20, "Gauss-Newton iterations at most of stage 2 (every parameter, the short share)",
                                low=1, high=1000)
    max_iters: int = setting(10, "Gauss-Newton iterations at most of the last stage (every parameter, all chunks)",
                             low=1, high=1000)
    ftol: float = setting(1e-3, "the last stage has converged when a step reduces the objective by less than this "
                          "share", low=0.0, low_open=True, high=0.5)
    converged_mu: float = setting(1e-2, "only a hardly regularised step counts for ftol: its Levenberg-Marquardt mu "
                                  "(on the Jacobian-scaled problem) at most this", low=0.0, high=1e8)
    stage_ftol: float = setting(0.02, "the same for the first stages (they only bring the last one close)",
                                low=0.0, low_open=True, high=0.5)
    latency_scan: int = setting(26, "each stage starts from the best of this many action latencies over their bounds "
                                "(the objective is not convex in it; 0: no scan)", low=0, high=1000)
    fd_step: float = setting(1e-6, "finite-difference step (relative to max(1, |x|))", low=1e-10, high=1e-2)
    widening: float = setting(3.0, "randomization ranges span estimate +- widening x std", low=0.0, high=100.0)
    threads: int = setting(0, "rollout threads (0: one per CPU)", low=0, high=256)
    smooth_effort: bool = setting(True, "compare efforts averaged over the median command period (measured and "
                                  "simulated alike)")
    belief: bool = setting(True, "also run the state estimator's online belief over the sessions (for the report)")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass
class Calibration:
    """What :func:`fit` found.

    Attributes:
        estimates: name -> :class:`Estimate` (``friction/<joint>``, ``damping/<joint>``,
            ``armature/<joint>``, ``stiffness_scale/<joint>``, ``damping_scale/<joint>``,
            ``payload_mass``, ``payload_com``, ``link_mass/<link>``, ``link_com/<link>``,
            ``link_inertia/<link>``, ``action_latency``, ``observation_latency``, ``bias/<joint>``).
        link_inertials: link -> (mass, com, inertia about the com) of the fitted model (the
            posterior: URDF values where the data is silent), what the calibrated profile uses.
        before, after: held-out replay with the prior (nominal) and the fitted model.
        sources: the sessions' provenance; ``warnings``: one line per thing not identified.
        stats: wall time, iterations, rollouts, objective before/after, and ``stages``: per
            stage its free parameters, replayed seconds, iterations, rollouts, wall time,
            objective and whether it converged.
        belief: the state estimator's online belief (friction, payload) at the end of each session.
    """

    joint_names: tuple[str, ...]
    link_names: tuple[str, ...]
    estimates: dict[str, Estimate]
    link_inertials: dict[str, tuple[float, list[float], list[float]]]
    before: ReplayScore
    after: ReplayScore
    sources: list[SourceInfo]
    config: FitConfig
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    belief: list[dict[str, Any]] = field(default_factory=list)
    package_version: str = __version__

    def value(self, name: str) -> Any:
        """The identified value of ``name`` (``None`` when not identified)."""
        return self.estimates[name].value


def _check(session: Session, robot: RobotModel, cfg: FitConfig) -> None:
    name = session.source.name
    if tuple(session.joint_names) != tuple(robot.joint_names):
        raise SessionError(f"{name}: joints {list(session.joint_names)} are not robot '{robot.name}'s "
                           f"{list(robot.joint_names)}")
    if session.command_mode != "position":
        raise SessionError(f"{name}: command mode '{session.command_mode}' cannot be replayed (position only)")
    gaps = np.diff(session.state_t)
    if gaps.max() > cfg.max_state_gap:
        i = int(np.argmax(gaps))
        raise SessionError(f"{name}: {gaps[i]:.3f} s without joint states after t = "
                           f"{session.state_t[i] - session.state_t[0]:.3f} s (max_state_gap {cfg.max_state_gap} s)")


class _Progress:
    """A tqdm bar over the stages' iterations (or a callback ``(iteration, objective)``)."""

    def __init__(self, progress: bool | Callable[[int, float], None], cfg: FitConfig) -> None:
        self.callback = progress if callable(progress) else None
        self.bar = None
        self.offsets: dict[str, int] = {}
        off = 0
        for st in staging.plan(cfg):
            self.offsets[st.name] = off
            off += st.max_iters
        if progress is True:
            from tqdm import tqdm
            self.bar = tqdm(total=off, desc="calibrate fit", unit="iter", leave=False)
        self.rollouts: Callable[[], int] = lambda: 0

    def __call__(self, stage: str, iteration: int, objective: float) -> None:
        n = self.offsets.get(stage, 0) + iteration
        if self.bar is not None:
            self.bar.n = min(n, self.bar.total)
            self.bar.set_postfix(stage=stage, objective=f"{objective:.4g}", rollouts=self.rollouts())
            self.bar.refresh()
        if self.callback is not None:
            self.callback(n, objective)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(sessions: list[Session], config: FitConfig | None = None, robot: RobotModel | None = None,
        progress: bool | Callable[[int, float], None] = True, ray: str | None = None) -> Calibration:
    """Identify the simulator from ``sessions`` (see the module docstring).

    Args:
        progress: ``True`` shows a tqdm bar; a callable gets ``(iteration, objective)``
            (iterations counted over the stages).
        ray: a Ray address (:mod:`simreal_ros.scale`): the rollouts of every step run as Ray
            tasks there, with the same result.

    Raises:
        SessionError: a session that cannot be used (wrong joints, gaps, too short, effort mode).
    """
    if not hasattr(sysid, "optimize"):
        raise RuntimeError("calibration needs mujoco.sysid's dependencies: pip install 'mujoco[sysid]==4.0.0' "
                           "(the package's calibrate extra)")
    cfg = config or FitConfig()
    robot = robot or load_robot()
    if not sessions:
        raise SessionError("no sessions to fit")
    for s in sessions:
        _check(s, robot, cfg)
    t_wall = time.perf_counter()
    with_effort = all(s.tau is not None for s in sessions)
    rp = Replay(robot, cfg, with_effort)
    if ray is not None:
        from simreal_ros.scale.rollouts import RayRollouts

        rp.remote = RayRollouts(ray)
    period = float(np.median(np.concatenate([np.diff(s.cmd_t) for s in sessions])))
    sample = float(np.median(np.concatenate([np.diff(s.state_t) for s in sessions])))
    rp.effort_average = (EffortAverage.over(period, sample, cfg.physics_dt) if cfg.smooth_effort else EffortAverage())
    fit_chunks, held_chunks = [], []
    for i, s in enumerate(sessions):
        start = max(s.state_t[0], s.cmd_t[0]) - s.state_t[0]
        end = min(s.state_t[-1], s.cmd_t[-1]) - s.state_t[0]
        split = start + (1.0 - cfg.holdout_fraction) * (end - start)
        fit_chunks += cut_chunks(s, i, start, split, cfg, rp.sensor_cols, with_effort, cfg.chunk_duration,
                                 rp.effort_average)
        held_chunks += cut_chunks(s, i, split, end, cfg, rp.sensor_cols, with_effort, cfg.chunk_duration,
                                  rp.effort_average)
    fit_dur = sum(c.duration for c in fit_chunks) if fit_chunks else 0.0
    if fit_dur < cfg.min_fit_duration or not held_chunks:
        total = sum(s.duration for s in sessions)
        raise SessionError(f"sessions too short: {total:.1f} s in all, {fit_dur:.1f} s to fit "
                           f"(min_fit_duration {cfg.min_fit_duration} s after holding out {cfg.holdout_fraction:.0%})")
    params = rp.params
    names = robot.joint_names

    # What the data cannot tell: frozen at the prior, with the reason.
    vel_cols = [rp.sensor_cols[f"{j}_vel"][0] for j in names]
    peak = np.max(np.abs(np.concatenate([c.meas[:, vel_cols] for c in fit_chunks])), axis=0)
    reasons = unidentifiable(params, set(cfg.parameters), tuple(names), peak, cfg.min_joint_speed, with_effort)
    warnings = [f"{n}: {why}" for n, why in reasons.items() if not why.startswith("not fitted")]
    for n, p in params.items():
        p.frozen = n in reasons
    params.move_off_bounds(fraction=0.02)

    def prior(ps: sysid.ParameterDict):
        """Weak prior on the link inertias (and the payload's centre of mass) at the URDF's
        values, on the free vector of ``ps`` as frozen now."""
        idx, x0, w, off = [], [], [], 0
        for n, p in ps.items():
            if p.frozen:
                continue
            sigma = cfg.inertia_prior_std if n.startswith("inertia/") else 0.05 if n == "payload_com" else None
            if sigma is not None:
                idx += list(range(off, off + p.size))
                x0 += list(p.as_nominal_vector())
                w += [1.0 / sigma] * p.size
            off += p.size
        return np.array(idx, int), np.array(x0, float), np.array(w, float)

    held_seqs = rp.sequences(held_chunks, "heldout")
    prior_params = params.copy()
    prior_params.reset()
    before = rp.score(held_seqs, prior_params)
    fit_seqs = rp.sequences(fit_chunks, "fit")
    r_start = rp.residual_fn(fit_seqs, prior(params))(params.as_vector(), params)[0]
    bar = _Progress(progress, cfg)
    bar.rollouts = lambda: rp.rollouts
    try:
        outcome = staging.run(rp, params, fit_chunks, set(reasons), prior, cfg, on_iter=bar)
    finally:
        bar.close()
    opt_params = outcome.params
    # the intervals: the toolbox's covariance at the optimum, on the last stage's data
    residual_fn = rp.residual_fn(fit_seqs, prior(opt_params))
    r_star = residual_fn(outcome.x, opt_params)[0]
    jac = outcome.jac
    if jac is None or jac.shape != (sum(r.size for r in r_star), outcome.x.size):
        raise RuntimeError("the optimizer returned no Jacobian at the optimum")  # cannot happen: FULLITER logs
    cov, half = sysid.calculate_intervals(r_star, jac)
    dof = max(1, sum(r.size for r in r_star) - len(outcome.x))
    from scipy.special import stdtrit
    std = half / stdtrit(dof, 0.975)
    after = rp.score(held_seqs, opt_params)

    est, link_inertials = estimates(opt_params, prior_params, std, cov, reasons, warnings)
    obs = observation_latency(sessions)
    est["observation_latency"] = obs
    if not obs.identified:
        warnings.append(f"observation_latency: {obs.reason}")
    if not outcome.converged:
        last = outcome.stages[-1]
        warnings.insert(0, f"the optimizer stopped at the last stage's max_iters ({last.iterations}) before "
                           "converging: the estimates and their std are not reliable (raise max_iters or fit fewer "
                           "kinds)")
    belief = [_belief(s, robot) for s in sessions] if cfg.belief and with_effort else []
    stats = {"wall_time_s": time.perf_counter() - t_wall, "iterations": sum(s.iterations for s in outcome.stages),
             "rollouts": rp.rollouts, "rollout_steps": rp.rollout_steps, "rollout_time_s": rp.rollout_time,
             "objective_start": 0.5 * float(sum(r @ r for r in r_start)),  # all fitted chunks, as the end
             "objective_end": 0.5 * float(sum(r @ r for r in r_star)),
             "fit_duration_s": float(fit_dur), "heldout_duration_s": float(sum(c.duration for c in held_chunks)),
             "free_parameters": int(len(outcome.x)), "with_effort": with_effort, "converged": outcome.converged,
             "stages": [s.as_dict() for s in outcome.stages],
             "optimizer": "; ".join(f"{s.name}: {s.stop}" for s in outcome.stages)}
    return Calibration(tuple(names), tuple(j.child for j in robot.joints), est, link_inertials, before, after,
                       [s.source for s in sessions], cfg, warnings, stats, belief)


def _belief(session: Session, robot: RobotModel) -> dict[str, Any]:
    """The state estimator's online friction/payload belief (the deployed settings,
    ``config/estimator.yaml``) at the end of ``session``, fed every measured state."""
    from simreal_ros.estimator.cli import load_config
    from simreal_ros.estimator.estimator import StateEstimator

    est = StateEstimator(robot, load_config())
    for k in range(len(session.state_t)):
        est.process(float(session.state_t[k]), session.q[k], session.dq[k], session.tau[k])
    b = est.belief()
    out = b.as_dict(robot.joint_names) if b is not None else {}
    out["session"] = session.source.name
    return out
