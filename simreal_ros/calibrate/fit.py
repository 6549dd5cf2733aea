"""Identify the simulator from recorded sessions with ``mujoco.sysid`` (ROS-free).

:func:`fit` replays the commands the shield sent (zero-order hold on the physics grid, as the sim
bridge holds them) through the package's MuJoCo arm (:func:`~simreal_ros.calibrate.params.replay_spec`),
compares the simulated joint positions, velocities and efforts with the measured ones, and lets
the toolbox's bounded Gauss-Newton (``mujoco.sysid.optimize``, ``mujoco.minimize`` underneath,
finite-difference Jacobians from batched ``mujoco.rollout``) move the parameters of
:mod:`simreal_ros.calibrate.params`. Intervals come from the toolbox's
``calculate_intervals`` (the covariance at the optimum). What the data cannot tell is never given
a value: a joint that did not move keeps its friction, damping, armature and gains at the prior
(frozen, with the reason); a parameter whose interval stays wide is reported as not identified.
The link inertias carry a weak prior at the URDF's values, so the directions of the inertial
parameters that the motion does not excite stay there (robot inertial parameters are only
identifiable as combinations, the base parameters).

Each session is split by time: the first ``1 - holdout`` is fitted (in chunks of
``chunk_duration``, each starting from its measured state), the rest is replayed with the prior
and the fitted model and scored (RMSE per joint).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from mujoco import sysid

from simreal_ros import __version__
from simreal_ros.calibrate.params import UNITS, Bounds, build_parameters, link_inertial, replay_spec
from simreal_ros.calibrate.session import Session, SessionError, SourceInfo
from simreal_ros.robot import RobotModel, load_robot
from simreal_ros.settings import setting, validate_fields
from simreal_ros.sim.arm import physics_dt_setting

KINDS = ("friction", "damping", "armature", "gain_scale", "payload", "inertia", "latency", "bias")


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
    chunk_duration: float = setting(10.0, "the fitted part is replayed in chunks of this length, each from its "
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
    max_iters: int = setting(30, "Gauss-Newton iterations at most", low=1, high=1000)
    fd_step: float = setting(1e-6, "finite-difference step (relative to max(1, |x|))", low=1e-10, high=1e-2)
    widening: float = setting(3.0, "randomization ranges span estimate +- widening x std", low=0.0, high=100.0)
    threads: int = setting(0, "rollout threads (0: one per CPU)", low=0, high=256)
    smooth_effort: bool = setting(True, "compare efforts averaged over the median command period (measured and "
                                  "simulated alike)")
    belief: bool = setting(True, "also run the state estimator's online belief over the sessions (for the report)")

    def __post_init__(self) -> None:
        validate_fields(self)


@dataclass
class Estimate:
    """One identified quantity. ``value``/``std`` are ``None`` when not identified (``reason`` says why)."""

    name: str
    unit: str
    prior: float | list[float]
    value: float | list[float] | None
    std: float | list[float] | None
    identified: bool
    reason: str = ""
    fitted: float | list[float] | None = None  # the optimizer's value even when not identified (simulation only)

    def as_dict(self) -> dict[str, Any]:
        d = {"value": self.value, "std": self.std, "unit": self.unit, "prior": self.prior,
             "identified": self.identified}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class ReplayScore:
    """Held-out replay of one model: RMSE per joint and the traces (for the report)."""

    position_rmse: np.ndarray  # rad, per joint
    effort_rmse: np.ndarray | None  # N m, per joint
    times: list[np.ndarray]
    measured: list[np.ndarray]  # (T, n_sensors) per held-out chunk
    predicted: list[np.ndarray]
    sensor_names: list[str]


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
        stats: wall time, iterations, rollouts, objective before/after.
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


# ---------------------------------------------------------------------------------- data
@dataclass
class _Chunk:
    t0: float
    initial_q: np.ndarray
    initial_dq: np.ndarray
    control: np.ndarray  # (K+1, n) on t0 + k dt
    meas_t: np.ndarray
    meas: np.ndarray  # (T, n_sensors) in sensor order
    session: int


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


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` samples (both measured and simulated efforts get
    it: it removes the steps every sent command puts into the impedance torque, which would
    otherwise make the fit of the latency alias to multiples of the command period)."""
    if window <= 1:
        return x
    from scipy.ndimage import uniform_filter1d
    return uniform_filter1d(np.asarray(x, float), size=window, axis=0, mode="nearest")


def _chunks(session: Session, idx: int, a: float, b: float, cfg: FitConfig, sensor_cols: dict[str, tuple[int, int]],
            with_effort: bool, chunk: float, effort_window: int = 1) -> list[_Chunk]:
    """Cut [a, b] (relative seconds) of ``session`` into replay chunks."""
    t_ref = session.state_t[0]
    st = session.state_t - t_ref
    ct = session.cmd_t - t_ref
    dt = cfg.physics_dt
    decim = max(1, round(cfg.residual_period / dt))
    sample = float(np.median(np.diff(st)))
    every = max(1, round(cfg.residual_period / sample))  # measured samples per compared one
    # the same averaging time as the simulated efforts get (effort_window physics steps)
    tau = None if not with_effort else _smooth(session.tau, max(1, round(effort_window * cfg.physics_dt / sample)))
    n_chunks = max(1, int(round((b - a) / chunk)))
    edges = np.linspace(a, b, n_chunks + 1)
    out = []
    for c0, c1 in zip(edges[:-1], edges[1:]):
        i0 = int(np.searchsorted(st, c0))
        if i0 >= len(st):
            continue
        t0 = float(st[i0])
        k = int(math.floor((c1 - t0) / dt + 1e-9))
        if k < 2 * decim or c1 - t0 <= cfg.burn_in + 2 * cfg.residual_period:
            continue
        grid = t0 + dt * np.arange(k + 1)
        j = np.searchsorted(ct, grid + 1e-9, side="right") - 1
        control = np.where((j >= 0)[:, None], session.cmd[np.clip(j, 0, None)], session.q[i0])
        edge = effort_window * dt  # the simulated efforts' moving average is one-sided there
        first = t0 + max(edge, cfg.burn_in)
        sel = np.flatnonzero((st > first + 1e-9) & (st <= grid[-1] - edge + 1e-9))[every - 1::every]
        meas = np.zeros((len(sel), len(sensor_cols)))
        for i, jn in enumerate(session.joint_names):
            meas[:, sensor_cols[f"{jn}_pos"][0]] = session.q[sel, i]
            meas[:, sensor_cols[f"{jn}_vel"][0]] = session.dq[sel, i]
            if with_effort:
                meas[:, sensor_cols[f"{jn}_torque"][0]] = tau[sel, i]
        out.append(_Chunk(t0, session.q[i0].copy(), session.dq[i0].copy(), control, st[sel], meas, idx))
    return out


# ---------------------------------------------------------------------------------- fit
class _Replay:
    """The replay model, its parameters, the residual and the bookkeeping of rollouts."""

    def __init__(self, robot: RobotModel, cfg: FitConfig, with_effort: bool) -> None:
        self.robot, self.cfg, self.with_effort = robot, cfg, with_effort
        self.spec = replay_spec(robot, cfg.physics_dt, with_effort)
        self.model0 = self.spec.compile()
        self.params = build_parameters(self.spec, robot, Bounds())
        self.sensor_map = sysid.TimeSeries.compute_all_sensor_mapping(self.model0)
        self.sensor_cols = {k: (int(v[1][0]), len(v[1])) for k, v in self.sensor_map.items()}
        self.sensor_names = list(self.sensor_map)
        self.qpos_adr = np.array([self.model0.jnt_qposadr[self.model0.joint(j).id] for j in robot.joint_names])
        self.dof_adr = np.array([self.model0.jnt_dofadr[self.model0.joint(j).id] for j in robot.joint_names])
        self.pos_cols = np.array([self.sensor_cols[f"{j}_pos"][0] for j in robot.joint_names])
        self.vel_cols = np.array([self.sensor_cols[f"{j}_vel"][0] for j in robot.joint_names])
        self.tau_cols = (np.array([self.sensor_cols[f"{j}_torque"][0] for j in robot.joint_names])
                         if with_effort else np.array([], int))
        self.effort_window = 1
        self.decim = max(1, round(cfg.residual_period / cfg.physics_dt))
        self.threads = cfg.threads or (os.cpu_count() or 1)
        self.rollouts = 0
        self.rollout_steps = 0
        self.rollout_time = 0.0
        self.remote: Callable | None = None  # runs the batches elsewhere (simreal_ros.scale.rollouts)
        p = self.params
        tr = sysid.SignalTransform(normalize=False)
        tr.delay("*", p["action_latency"])
        for j in robot.joint_names:
            tr.bias(f"{j}_pos", p[f"bias/{j}"], target="predicted")
        weights = {}
        for j in robot.joint_names:
            weights[f"{j}_pos"] = 1.0 / cfg.position_scale
            weights[f"{j}_vel"] = 1.0 / cfg.velocity_scale
            if with_effort:
                weights[f"{j}_torque"] = 1.0 / cfg.effort_scale
        tr.set_sensor_weights(weights)
        self.transform = tr

    def build_model(self, params: sysid.ParameterDict, spec):
        """The toolbox's model build, keeping the nominal model's constraint scaling
        (``*_invweight0``, from the mass matrix at compile time): the simulator the
        calibration drives (:class:`~simreal_ros.sim.arm.ArmSim`, randomization writing into a
        compiled model) never recomputes it, and it sets how soft the joint friction is."""
        m = sysid.apply_param_modifiers(params, spec)
        m.dof_invweight0[:] = self.model0.dof_invweight0
        m.body_invweight0[:] = self.model0.body_invweight0
        return m

    def sequences(self, chunks: list[_Chunk], name: str) -> list[sysid.ModelSequences]:
        """One ModelSequences per chunk (each its own initial state)."""
        out = []
        for i, c in enumerate(chunks):
            qpos = self.model0.qpos0.copy()
            qpos[self.qpos_adr] = c.initial_q
            qvel = np.zeros(self.model0.nv)
            qvel[self.dof_adr] = c.initial_dq
            init = sysid.create_initial_state(self.model0, qpos, qvel)
            init[0] = c.t0
            times = c.t0 + self.cfg.physics_dt * np.arange(len(c.control))
            ctrl = sysid.TimeSeries(times, c.control)
            meas = sysid.TimeSeries(c.meas_t, c.meas, self.sensor_map)
            out.append(sysid.ModelSequences(f"{name}{i}", self.spec, f"{name}{i}", init, ctrl, meas))
        return out

    def rollout(self, models, datas, control_signal, initial_states, param_dicts, rollout_signal_mapping,
                rollout_state_mapping, ctrl_mapping):
        """The toolbox's rollout, in batches, with the bias taken off the measured initial
        position (and the unused state decimated)."""
        per = len(models) // len(param_dicts)
        init = np.array(initial_states, dtype=float)
        for i in range(len(models)):
            pd = param_dicts[i // per]
            bias = np.array([pd[f"bias/{j}"].value[0] for j in self.robot.joint_names])
            init[i, 1 + self.qpos_adr] -= bias
        out = []
        batch = max(1, 4 * len(datas))
        t = time.perf_counter()
        if self.remote is not None:  # the same rollouts as Ray tasks (deterministic: same trajectories)
            batches = [self.remote(models, control_signal, init, rollout_signal_mapping, rollout_state_mapping,
                                   ctrl_mapping)]
        else:
            batches = (sysid.sysid_rollout(models[s:s + batch], datas, control_signal[s:s + batch],
                                           init[s:s + batch], rollout_signal_mapping, rollout_state_mapping,
                                           ctrl_mapping) for s in range(0, len(models), batch))
        for trajs in batches:
            d = self.decim
            for tr in trajs:
                st, sd = tr.state, tr.sensordata
                # As ArmSim measures: position and velocity after the step (the rollout's
                # sensors see the state before it), effort of the step that led there.
                sd.data[:, self.pos_cols] = st.data[:, 1 + self.qpos_adr]
                sd.data[:, self.vel_cols] = st.data[:, 1 + self.model0.nq + self.dof_adr]
                if self.with_effort and self.effort_window > 1:
                    sd.data[:, self.tau_cols] = _smooth(sd.data[:, self.tau_cols], self.effort_window)
                # the sensors stay at the physics rate: the delay transform interpolates them at
                # the (decimated) measured stamps; the state is not compared
                out.append(tr.replace(
                    state=sysid.TimeSeries(st.times[d - 1::d], st.data[d - 1::d], st.signal_mapping)))
        self.rollout_time += time.perf_counter() - t
        self.rollouts += len(models)
        self.rollout_steps += sum(len(c.data) for c in control_signal)
        return out

    def residual_fn(self, seqs: list[sysid.ModelSequences], prior: tuple[np.ndarray, np.ndarray, np.ndarray]):
        base = sysid.build_residual_fn(models_sequences=seqs, build_model=self.build_model,
                                       modify_residual=self.transform.apply,
                                       custom_rollout=self.rollout, n_threads=self.threads, resample_true=False)
        idx, x0, w = prior

        def fn(x, params, **kw):
            res, preds, recs = base(x, params, **kw)
            if len(idx):
                if x.ndim == 1:
                    res = [*res, (x[idx] - x0) * w]
                else:
                    res = [*res, (x[idx] - x0[:, None]) * w[:, None]]
            return res, preds, recs
        return fn

    def score(self, seqs: list[sysid.ModelSequences], params: sysid.ParameterDict) -> ReplayScore:
        """Replay the held-out chunks with ``params``; RMSE per joint of positions (and efforts)."""
        x = params.as_vector()
        _, preds, recs = sysid.residual(x, params, seqs, build_model=self.build_model,
                                        modify_residual=self.transform.apply,
                                        custom_rollout=self.rollout, n_threads=self.threads, resample_true=False,
                                        return_pred_all=True)
        pred = [p[0] for p in preds]
        meas = [r[0] for r in recs]
        names = self.robot.joint_names
        pos = [self.sensor_cols[f"{j}_pos"][0] for j in names]
        e2 = np.concatenate([(m.data - p.data)[:, pos] for m, p in zip(meas, pred)]) ** 2
        eff = None
        if self.with_effort:
            tc = [self.sensor_cols[f"{j}_torque"][0] for j in names]
            eff = np.sqrt(np.mean(np.concatenate([(m.data - p.data)[:, tc] for m, p in zip(meas, pred)]) ** 2, axis=0))
        return ReplayScore(np.sqrt(e2.mean(axis=0)), eff, [m.times for m in meas], [m.data for m in meas],
                           [p.data for p in pred], self.sensor_names)


def _progress_bar(progress: bool | Callable[[int, float], None], total: int):
    if callable(progress):
        return None, progress
    if not progress:
        return None, None
    from tqdm import tqdm
    bar = tqdm(total=total, desc="calibrate fit", unit="iter", leave=False)
    return bar, None


def fit(sessions: list[Session], config: FitConfig | None = None, robot: RobotModel | None = None,
        progress: bool | Callable[[int, float], None] = True, ray: str | None = None) -> Calibration:
    """Identify the simulator from ``sessions`` (see the module docstring).

    Args:
        progress: ``True`` shows a tqdm bar; a callable gets ``(iteration, objective)``.
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
    rp = _Replay(robot, cfg, with_effort)
    if ray is not None:
        from simreal_ros.scale.rollouts import RayRollouts

        rp.remote = RayRollouts(ray)
    period = float(np.median(np.concatenate([np.diff(s.cmd_t) for s in sessions])))
    rp.effort_window = max(1, round(period / cfg.physics_dt)) if cfg.smooth_effort else 1
    fit_chunks, held_chunks = [], []
    for i, s in enumerate(sessions):
        start = max(s.state_t[0], s.cmd_t[0]) - s.state_t[0]
        end = min(s.state_t[-1], s.cmd_t[-1]) - s.state_t[0]
        split = start + (1.0 - cfg.holdout_fraction) * (end - start)
        fit_chunks += _chunks(s, i, start, split, cfg, rp.sensor_cols, with_effort, cfg.chunk_duration,
                              rp.effort_window)
        held_chunks += _chunks(s, i, split, end, cfg, rp.sensor_cols, with_effort, cfg.chunk_duration,
                               rp.effort_window)
    fit_dur = sum(c.meas_t[-1] - c.t0 for c in fit_chunks) if fit_chunks else 0.0
    if fit_dur < cfg.min_fit_duration or not held_chunks:
        total = sum(s.duration for s in sessions)
        raise SessionError(f"sessions too short: {total:.1f} s in all, {fit_dur:.1f} s to fit "
                           f"(min_fit_duration {cfg.min_fit_duration} s after holding out {cfg.holdout_fraction:.0%})")
    params = rp.params
    names = robot.joint_names
    warnings: list[str] = []
    reasons: dict[str, str] = {}

    # What the data cannot tell: freeze it at the prior, with the reason.
    vel_cols = [rp.sensor_cols[f"{j}_vel"][0] for j in names]
    peak = np.max(np.abs(np.concatenate([c.meas[:, vel_cols] for c in fit_chunks])), axis=0)
    wanted = set(cfg.parameters)
    kind_of = {"friction": "friction", "damping": "damping", "armature": "armature",
               "stiffness_scale": "gain_scale", "damping_scale": "gain_scale", "payload_mass": "payload",
               "payload_com": "payload", "inertia": "inertia", "action_latency": "latency", "bias": "bias"}
    for pname, p in params.items():
        kind = kind_of[pname.split("/")[0]]
        if kind not in wanted:
            p.frozen = True
            reasons[pname] = "not fitted (FitConfig.parameters)"
            continue
        if "/" in pname and pname.split("/")[1] in names:
            j = names.index(pname.split("/")[1])
            if kind in ("friction", "damping", "armature", "gain_scale") and peak[j] < cfg.min_joint_speed:
                p.frozen = True
                reasons[pname] = (f"joint {names[j]} did not move (peak speed {peak[j]:.3g} rad/s < "
                                  f"min_joint_speed {cfg.min_joint_speed} rad/s)")
        if kind == "gain_scale" and not with_effort:
            p.frozen = True
            reasons[pname] = ("no measured efforts: the impedance gains are indistinguishable from a common "
                              "scale of inertia and friction")
    for pname, why in reasons.items():
        if not why.startswith("not fitted"):
            warnings.append(f"{pname}: {why}")
    params.move_off_bounds(fraction=0.02)
    x_start = params.as_vector()

    # Weak prior on the link inertias (and the payload's centre of mass) at the URDF's values.
    free = [(n, p) for n, p in params.items() if not p.frozen]
    idx, x0, w, off = [], [], [], 0
    for n, p in free:
        sigma = cfg.inertia_prior_std if n.startswith("inertia/") else 0.05 if n == "payload_com" else None
        if sigma is not None:
            idx += list(range(off, off + p.size))
            x0 += list(p.as_nominal_vector())
            w += [1.0 / sigma] * p.size
        off += p.size
    prior = (np.array(idx, int), np.array(x0), np.array(w))
    fit_seqs = rp.sequences(fit_chunks, "fit")
    held_seqs = rp.sequences(held_chunks, "heldout")
    residual_fn = rp.residual_fn(fit_seqs, prior)

    prior_params = params.copy()
    prior_params.reset()
    before = rp.score(held_seqs, prior_params)
    r0 = np.concatenate(residual_fn(x_start, params)[0])
    bar, callback = _progress_bar(progress, cfg.max_iters)
    iters = [0]

    def on_iter(trace):
        for i in range(len(trace) - 1):  # keep only the last Jacobian (each one is large)
            if trace[i].jacobian is not None:
                trace[i] = dataclasses.replace(trace[i], jacobian=None, residual=None)
        iters[0] = len(trace)
        y = float(trace[-1].objective)
        if bar is not None:
            bar.n = min(len(trace), cfg.max_iters)
            bar.set_postfix(objective=f"{y:.4g}", rollouts=rp.rollouts)
            bar.refresh()
        if callback is not None:
            callback(len(trace), y)

    log = io.StringIO()
    try:
        opt_params, result = sysid.optimize(params, residual_fn, optimizer="mujoco", verbose=False,
                                            max_iters=cfg.max_iters, x_scale="jac", eps=cfg.fd_step,
                                            iter_callback=on_iter, output=log)
    finally:
        if bar is not None:
            bar.close()
    r_star = residual_fn(result.x, opt_params)[0]
    cov, half = sysid.calculate_intervals(r_star, result.jac)
    dof = max(1, sum(r.size for r in r_star) - len(result.x))
    from scipy.special import stdtrit
    std = half / stdtrit(dof, 0.975)
    after = rp.score(held_seqs, opt_params)

    estimates, link_inertials = _estimates(opt_params, prior_params, std, cov, reasons, robot, warnings)
    obs = _observation_latency(sessions)
    estimates["observation_latency"] = obs
    if not obs.identified:
        warnings.append(f"observation_latency: {obs.reason}")
    if "maximum iterations" in log.getvalue():
        warnings.insert(0, f"the optimizer stopped at max_iters ({cfg.max_iters}) before converging: the "
                           "estimates and their std are not reliable (raise max_iters or fit fewer kinds)")
    belief = [_belief(s, robot) for s in sessions] if cfg.belief and with_effort else []
    stats = {"wall_time_s": time.perf_counter() - t_wall, "iterations": iters[0], "rollouts": rp.rollouts,
             "rollout_steps": rp.rollout_steps, "rollout_time_s": rp.rollout_time,
             "objective_start": 0.5 * float(r0 @ r0), "objective_end": 0.5 * float(sum(r @ r for r in r_star)),
             "fit_duration_s": float(fit_dur), "heldout_duration_s": float(sum(c.meas_t[-1] - c.t0 for c in held_chunks)),
             "free_parameters": int(len(result.x)), "with_effort": with_effort,
             "optimizer": " ".join(line for line in log.getvalue().splitlines() if line.startswith("Terminated"))}
    return Calibration(tuple(names), tuple(j.child for j in robot.joints), estimates, link_inertials, before, after,
                       [s.source for s in sessions], cfg, warnings, stats, belief)


# ---------------------------------------------------------------------------------- results
#: An estimate is identified when its std is below rel x |value| + floor (per kind).
_RESOLUTION = {"friction": (0.2, 0.02), "damping": (0.2, 0.02), "armature": (0.3, 0.003),
               "stiffness_scale": (0.0, 0.03), "damping_scale": (0.0, 0.03), "payload_mass": (0.1, 0.03),
               "payload_com": (0.0, 0.01), "action_latency": (0.0, 0.001), "bias": (0.0, 2e-4),
               "link_mass": (0.2, 0.05), "link_com": (0.0, 0.01), "link_inertia": (0.5, 1e-3)}


def _judge(kind: str, value: np.ndarray, std: np.ndarray) -> tuple[bool, str]:
    rel, floor = _RESOLUTION[kind]
    lim = rel * np.abs(value) + floor
    ok = np.all(np.isfinite(std)) and np.all(std <= lim)
    if ok:
        return True, ""
    worst = float(np.nanmax(np.where(np.isfinite(std), std / lim, np.inf)))
    return False, (f"the data does not determine it (std {_fmt(std)} vs the {_fmt(lim)} needed"
                   f"{'' if np.isfinite(worst) else ': no information'})")


def _fmt(a) -> str:
    a = np.atleast_1d(np.asarray(a, float))
    return ", ".join(f"{x:.3g}" for x in a) if a.size > 1 else f"{a[0]:.3g}"


def _plain(a) -> float | list[float]:
    a = np.asarray(a, float)
    return float(a.ravel()[0]) if a.size == 1 else [float(x) for x in a.ravel()]


def _estimates(opt: sysid.ParameterDict, prior: sysid.ParameterDict, std: np.ndarray, cov: np.ndarray,
               reasons: dict[str, str], robot: RobotModel, warnings: list[str]):
    est: dict[str, Estimate] = {}
    links: dict[str, tuple[float, list[float], list[float]]] = {}
    off = 0
    for name, p in opt.items():
        kind = name.split("/")[0]
        nominal = prior[name].as_vector()
        if p.frozen:
            s = None
        else:
            s = std[off:off + p.size]
            block = cov[off:off + p.size, off:off + p.size]
            off += p.size
        if kind == "inertia":
            link = name.split("/", 1)[1]
            m, c, inertia = link_inertial(p.value)
            links[link] = (m, [float(x) for x in c], [float(x) for x in inertia])
            m0, c0, i0 = link_inertial(nominal)
            if s is None:
                for key, v0, unit in (("link_mass", m0, "kg"), ("link_com", c0, "m"), ("link_inertia", i0, "kg m^2")):
                    est[f"{key}/{link}"] = Estimate(f"{key}/{link}", unit, _plain(v0), None, None, False, reasons[name])
                continue
            g = _derived_cov(p.value, block)
            for key, v, v0, sl, unit in (("link_mass", m, m0, slice(0, 1), "kg"), ("link_com", c, c0, slice(1, 4), "m"),
                                         ("link_inertia", inertia, i0, slice(4, 10), "kg m^2")):
                sd = np.sqrt(np.maximum(np.diag(g)[sl], 0.0))
                if not np.all(np.isfinite(s)):
                    sd = np.full(sd.shape, np.inf)
                ok, why = _judge(key, np.atleast_1d(v), sd)
                e = Estimate(f"{key}/{link}", unit, _plain(v0), _plain(v) if ok else None,
                             _plain(sd) if ok else None, ok, why, fitted=_plain(v))
                est[e.name] = e
            continue
        unit = UNITS[kind]
        if s is None:
            est[name] = Estimate(name, unit, _plain(nominal), None, None, False, reasons[name])
            continue
        ok, why = _judge(kind, p.as_vector(), s)
        est[name] = Estimate(name, unit, _plain(nominal), _plain(p.as_vector()) if ok else None,
                             _plain(s) if ok else None, ok, why, fitted=_plain(p.as_vector()))
    for e in est.values():
        if not e.identified and e.reason and not e.reason.startswith("not fitted") and e.name not in reasons:
            warnings.append(f"{e.name}: {e.reason}")
    return est, links


def _derived_cov(theta: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Covariance of (mass, com, inertia) from that of the log-Cholesky parameters (delta method)."""
    def g(t):
        m, c, i = link_inertial(t)
        return np.concatenate([[m], c, i])
    g0 = g(theta)
    jac = np.zeros((10, theta.size))
    for k in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[k]))
        t = theta.copy()
        t[k] += h
        jac[:, k] = (g(t) - g0) / h
    with np.errstate(invalid="ignore"):
        return jac @ block @ jac.T


def _observation_latency(sessions: list[Session]) -> Estimate:
    """Median of (arrival - acquisition stamp) of the joint states; std: their spread."""
    lags = [np.asarray(s.state_recv_t) - s.state_t for s in sessions if s.state_recv_t is not None]
    if len(lags) < len(sessions) or not lags:
        return Estimate("observation_latency", "s", 0.0, None, None, False,
                        "the sessions have no arrival times of the joint states; a replay of the sent commands "
                        "cannot tell observation from action latency")
    lag = np.concatenate(lags)
    med = float(np.median(lag))
    spread = float(1.4826 * np.median(np.abs(lag - med)))
    if med < 0:
        return Estimate("observation_latency", "s", 0.0, None, None, False,
                        f"joint states arrive before they were taken (median {med:.4f} s): clocks differ")
    return Estimate("observation_latency", "s", 0.0, med, max(spread, 1e-4), True, fitted=med)


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
