"""The replay: recorded sessions cut into chunks and rolled out through the package's MuJoCo arm.

:func:`cut_chunks` cuts a time range of a :class:`~simreal_ros.calibrate.session.Session` into
chunks, each replayed from its measured state with the sent commands held on the physics grid
(zero-order hold from the time each command reached the arm: :func:`command_times`).
:class:`Replay` owns the replay model (:func:`~simreal_ros.calibrate.params.replay_spec`), its
``mujoco.sysid`` parameters, the signal transform (action latency: the toolbox's signal delay;
position bias), the residual the optimizer minimises and the held-out score, and counts the
rollouts it runs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from mujoco import sysid

from simreal_ros.calibrate.params import Bounds, build_parameters, replay_spec
from simreal_ros.calibrate.session import Session
from simreal_ros.robot import RobotModel

if TYPE_CHECKING:
    from simreal_ros.calibrate.fit import FitConfig


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
class Chunk:
    """One replayed piece of a session: its start, measured initial state, the held commands on
    the physics grid and the compared measurements."""

    t0: float
    initial_q: np.ndarray
    initial_dq: np.ndarray
    control: np.ndarray  # (K+1, n) on t0 + k dt
    meas_t: np.ndarray
    meas: np.ndarray  # (T, n_sensors) in sensor order
    session: int

    @property
    def duration(self) -> float:
        return float(self.meas_t[-1] - self.t0)


@dataclass(frozen=True)
class EffortAverage:
    """The moving average both measured and simulated efforts get: the same samples in time.

    It removes the steps every sent command puts into the impedance torque (which would
    otherwise make the fit of the latency alias to multiples of the command period). The
    measured efforts are averaged over ``samples`` (offsets in measured samples, as
    ``scipy.ndimage.uniform_filter1d`` places its window), the simulated ones, on the physics
    grid, over the same instants (``steps``, offsets in physics steps): with states slower than
    the physics (a 250 Hz bridge) a plain moving average of the physics steps would be a
    different filter, shifted by up to half a state period, which the fit would take up as
    action latency and extra damping.
    """

    samples: tuple[int, ...] = (0,)
    steps: tuple[int, ...] = (0,)

    @classmethod
    def over(cls, window: float, sample_period: float, physics_dt: float) -> EffortAverage:
        """Average over ``window`` s of states taken every ``sample_period`` s."""
        n = max(1, round(window / sample_period))
        off = np.arange(n) - n // 2
        per = max(1, round(sample_period / physics_dt))
        return cls(tuple(int(o) for o in off), tuple(int(o) * per for o in off))

    def span(self, physics_dt: float) -> float:
        """How far the simulated average reaches (s): it is one-sided that close to a chunk's ends."""
        return (max(abs(o) for o in self.steps) + 1) * physics_dt


def smooth(x: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """Mean of ``x`` at the row offsets ``offsets`` (clamped at the ends), row by row."""
    if len(offsets) <= 1 and not any(offsets):
        return x
    x = np.asarray(x, float)
    idx = np.arange(len(x))
    return np.mean([x[np.clip(idx + o, 0, len(x) - 1)] for o in offsets], axis=0)


def recorder_lag(session: Session) -> np.ndarray | None:
    """How long each sent command waited in the recorder (s): received later than the shield
    stamped it by more than the quickest commands' transport. ``None`` without the commands'
    receive times."""
    if session.cmd_recv_t is None:
        return None
    lag = np.asarray(session.cmd_recv_t, float) - np.asarray(session.cmd_t, float)
    return np.maximum(lag - np.quantile(lag, 0.02), 0.0)


def publish_times(session: Session) -> np.ndarray | None:
    """When each state left the driver, as far as the bag tells (s, the states' clock): its
    receive time less the recorder's own lag (:func:`recorder_lag`, interpolated to when the
    state was received). ``None`` without receive times; without the commands' receive times
    the states' receive times as they are."""
    if session.state_recv_t is None:
        return None
    recv = np.asarray(session.state_recv_t, float)
    own = recorder_lag(session)
    if own is None:
        return recv
    c_recv = np.asarray(session.cmd_recv_t, float)
    order = np.argsort(c_recv, kind="stable")
    return recv - np.interp(recv, c_recv[order], own[order])


def command_times(session: Session, clock: str, transport: float = 0.0) -> np.ndarray:
    """When each sent command took effect on the arm, on the joint states' clock (s, relative to
    the session's first state).

    ``stamp``: the shield's stamps as they are.

    ``arm``: a driver applies a command at the start of its next cycle and stamps each state
    with the time it took it. Its cycles are its states: a command acts from the start of the
    cycle of the first state the driver published after the command reached it (``transport``
    after it was sent; that state reached the recorder ``transport`` after it was published), which is that
    state's stamp plus the observation latency (the quickest ``receive - stamp`` of the
    states) minus one state period. That is what a paced simulator does, also when it falls
    behind the wall clock (its stamps are the *scheduled* times of its sim time, and a command
    that arrives while it catches up acts at the sim time it has reached, earlier on the
    stamps' clock than the command's own stamp), and for a real arm it differs from the stamps
    by a constant (which the action latency takes up). Needs the recorder's receive times
    (``Session.state_recv_t``); without them the stamps are used. Where the recorder itself
    ran behind (:func:`recorder_lag`: a command it logged late, or states it logged while a
    command waited in it), the receive times do not order states and commands: those commands
    take their stamp shifted by the median shift of the others.
    """
    t_ref = session.state_t[0]
    ct = np.asarray(session.cmd_t, float) - t_ref
    if clock == "stamp" or session.state_recv_t is None:
        return ct
    st = np.asarray(session.state_t, float) - t_ref
    recv = np.maximum.accumulate(np.asarray(session.state_recv_t, float) - t_ref)
    base = float(np.quantile(recv - st, 0.02))  # observation latency + transport of the quickest states
    period = float(np.median(np.diff(st)))
    # the first state published after each command arrived: received 2 x transport after it was sent
    k = np.searchsorted(recv, ct + 2.0 * transport, side="right")
    inside = k < len(st)
    out = ct.copy()
    out[inside] = st[k[inside]] + base - period
    # a state the recorder missed just before k: place the command among the missing ones, their
    # receive times spread evenly between the neighbours'
    miss = np.flatnonzero(inside & (k > 0))
    miss = miss[st[k[miss]] - st[k[miss] - 1] > 1.5 * period]
    if len(miss):
        k1 = k[miss]
        m = np.round((st[k1] - st[k1 - 1]) / period)
        r0, r1 = recv[k1 - 1], recv[k1]
        frac = (ct[miss] + 2.0 * transport - r0) / np.maximum(r1 - r0, 1e-9)
        j = np.clip(np.floor(m * frac) + 1, 1, m)
        out[miss] = st[k1 - 1] + (j - 1) * period + base
    own = recorder_lag(session)
    if own is not None:
        waited = own > 0.5 * period
        bad = waited | ~inside
        if waited.any():  # states logged while a command waited in the recorder
            c_recv = np.asarray(session.cmd_recv_t, float) - t_ref
            lo, hi = c_recv[waited] - own[waited], c_recv[waited]
            kk = np.clip(k, 0, len(st) - 1)
            r = recv[kk]
            bad |= np.any((r[:, None] >= lo[None, :] - period) & (r[:, None] <= hi[None, :] + period), axis=1)
        if bad.all():
            return ct
        out[bad] = ct[bad] + float(np.median(out[~bad] - ct[~bad]))
    return out


def cut_chunks(session: Session, idx: int, a: float, b: float, cfg: FitConfig, sensor_cols: dict[str, tuple[int, int]],
               with_effort: bool, chunk: float, average: EffortAverage = EffortAverage()) -> list[Chunk]:
    """Cut [a, b] (relative seconds) of ``session`` into replay chunks of about ``chunk`` s."""
    t_ref = session.state_t[0]
    st = session.state_t - t_ref
    ct = command_times(session, cfg.command_clock, cfg.transport)
    order = np.argsort(ct, kind="stable")
    ct, cmds = ct[order], session.cmd[order]
    dt = cfg.physics_dt
    decim = max(1, round(cfg.residual_period / dt))
    sample = float(np.median(np.diff(st)))
    every = max(1, round(cfg.residual_period / sample))  # measured samples per compared one
    tau = None if not with_effort else smooth(session.tau, average.samples)  # as the simulated ones
    # a state whose effort average lacks a sample (the recorder missed one) is not compared: the
    # simulated average would be over other instants
    whole = np.ones(len(st), bool)
    if with_effort:
        for o in average.samples:
            if o == 0:
                continue
            j = np.arange(len(st)) + o
            inside = (j >= 0) & (j < len(st))
            gap = np.full(len(st), np.inf)
            gap[inside] = st[j[inside]] - st[inside]
            whole &= np.abs(gap - o * sample) <= 0.5 * sample
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
        control = np.where((j >= 0)[:, None], cmds[np.clip(j, 0, None)], session.q[i0])
        edge = average.span(dt) if with_effort else dt  # the simulated efforts' average is one-sided there
        first = t0 + max(edge, cfg.burn_in)
        sel = np.flatnonzero((st > first + 1e-9) & (st <= grid[-1] - edge + 1e-9) & whole)[every - 1::every]
        meas = np.zeros((len(sel), len(sensor_cols)))
        for i, jn in enumerate(session.joint_names):
            meas[:, sensor_cols[f"{jn}_pos"][0]] = session.q[sel, i]
            meas[:, sensor_cols[f"{jn}_vel"][0]] = session.dq[sel, i]
            if with_effort:
                meas[:, sensor_cols[f"{jn}_torque"][0]] = tau[sel, i]
        out.append(Chunk(t0, session.q[i0].copy(), session.dq[i0].copy(), control, st[sel], meas, idx))
    return out


class Replay:
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
        self.effort_average = EffortAverage()
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

    def sequences(self, chunks: list[Chunk], name: str) -> list[sysid.ModelSequences]:
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
                if self.with_effort:
                    sd.data[:, self.tau_cols] = smooth(sd.data[:, self.tau_cols], self.effort_average.steps)
                # the sensors stay at the physics rate: the delay transform interpolates them at
                # the (decimated) measured stamps; the state is not compared
                out.append(tr.replace(
                    state=sysid.TimeSeries(st.times[d - 1::d], st.data[d - 1::d], st.signal_mapping)))
        self.rollout_time += time.perf_counter() - t
        self.rollouts += len(models)
        self.rollout_steps += sum(len(c.data) for c in control_signal)
        return out

    def residual_fn(self, seqs: list[sysid.ModelSequences], prior: tuple[np.ndarray, np.ndarray, np.ndarray]):
        """The toolbox's residual over ``seqs`` plus a weak prior ``(index, x0, weight)`` on some
        entries of the free parameter vector."""
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


def rollout_count(replay: Replay) -> dict[str, Any]:
    """The replay's rollout bookkeeping (for a stage's statistics)."""
    return {"rollouts": replay.rollouts, "rollout_steps": replay.rollout_steps, "rollout_time_s": replay.rollout_time}
