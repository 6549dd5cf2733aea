"""The replay of a push session (ROS-free; issue 13): the pushes found in a :class:`PushLog`
(:func:`_prepare`), the replay model (:func:`replay_spec`: the table, a free puck with the task's
puck-table pair, the tool's cap on three slide joints following the recorded tip), each push as
``mujoco.sysid`` sequences (:func:`_replay`), their rollouts (:func:`rollout`), and the contact
force on both sides: the arm's, from the measured torques (:func:`_measured_force`), and the
replay's, averaged alike (:func:`_replay_pushes`).

The fit over these is :func:`simreal_ros.calibrate.contact.fit_contact`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from simreal_ros.calibrate.contact_log import ArmTool, PushLog, Segment
from simreal_ros.robot.mujoco_model import TABLE_HALF, TABLE_POS
from simreal_ros.robot.tool import ToolSpec
from simreal_ros.sim.push_task import PushTaskConfig

if TYPE_CHECKING:
    from simreal_ros.calibrate.contact import ContactConfig


# ---------------------------------------------------------------------------------- replay model
def replay_spec(task: PushTaskConfig, tool: ToolSpec, table_top: float, physics_dt: float = 0.001,
                tool_mass: float = 2.0, stiffness: float = 4e4) -> mujoco.MjSpec:
    """The table, a free puck with the task's puck-table pair, and the tool's cap on three slide
    joints following the recorded cap centre: a position servo (``stiffness``) with the
    recorded velocity fed forward (a velocity servo, critical damping), so the tool lags the
    recording by micrometres while pushing."""
    spec = mujoco.MjSpec()
    spec.modelname = "simreal_push_contact_replay"
    spec.option.timestep = physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    world = spec.worldbody
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX,
                   pos=[TABLE_POS[0], TABLE_POS[1], table_top - TABLE_HALF[2]], size=list(TABLE_HALF),
                   contype=2, conaffinity=1)
    body = world.add_body(name="tool", gravcomp=1.0)
    for axis, name in (([1, 0, 0], "tool_x"), ([0, 1, 0], "tool_y"), ([0, 0, 1], "tool_z")):
        body.add_joint(name=name, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=axis)
    half = (tool.length - 2 * tool.radius) / 2
    body.add_geom(name="tool", type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[tool.radius, half, 0], pos=[0, 0, half],
                  mass=tool_mass, contype=1, conaffinity=2, friction=[task.tool_friction, 0.005, 0.0001])
    kv = 2.0 * np.sqrt(stiffness * tool_mass)
    for name in ("tool_x", "tool_y", "tool_z"):
        a = spec.add_actuator(name=f"{name}_pos", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        a.gaintype, a.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        a.gainprm[0], a.biasprm[:3] = stiffness, [0.0, -stiffness, 0.0]
    for name in ("tool_x", "tool_y", "tool_z"):
        a = spec.add_actuator(name=f"{name}_vel", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        a.gaintype, a.biastype = mujoco.mjtGain.mjGAIN_FIXED, mujoco.mjtBias.mjBIAS_AFFINE
        a.gainprm[0], a.biasprm[:3] = kv, [0.0, 0.0, -kv]
    puck = world.add_body(name="puck")
    puck.add_freejoint(name="puck")
    puck.add_geom(name="puck", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[task.puck_radius, task.puck_height / 2, 0],
                  mass=task.puck_mass, contype=2, conaffinity=3, friction=[task.tool_friction, 0.005, 0.0001],
                  condim=4)
    mu = task.table_friction
    spec.add_pair(name="puck_table", geomname1="puck", geomname2="table", condim=4,
                  friction=[mu, mu, 0.005, 0.0001, 0.0001])
    spec.add_exclude(bodyname1="puck", bodyname2="world")
    spec.add_sensor(name="puck_pos", type=mujoco.mjtSensor.mjSENS_FRAMEPOS, objname="puck",
                    objtype=mujoco.mjtObj.mjOBJ_BODY)
    return spec


def _set_puck_mass(model: mujoco.MjModel, mass: float, task: PushTaskConfig) -> None:
    b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "puck")
    r, h = task.puck_radius, task.puck_height
    model.body_mass[b] = mass
    ixx = mass * (3 * r * r + h * h) / 12.0
    model.body_inertia[b] = [ixx, ixx, mass * r * r / 2.0]


# ---------------------------------------------------------------------------------- segments
@dataclass
class _Prepared:
    """One log with the tool's path and the pushes found in it."""

    log: PushLog
    tip: np.ndarray  # (N, 3) tool cap centre at the joint-state stamps
    tip_v: np.ndarray  # (N, 3)
    table_top: float
    segments: list[Segment]
    moving: np.ndarray  # (M,) at the object stamps
    contact: np.ndarray  # (M,)


def _speed(t: np.ndarray, p: np.ndarray, window: float) -> np.ndarray:
    """Puck speed over a centred window (robust to tracker noise)."""
    lo = np.interp(t - window / 2, t, np.arange(len(t)))
    hi = np.interp(t + window / 2, t, np.arange(len(t)))
    def at(x):
        return np.stack([np.interp(x, np.arange(len(t)), p[:, i]) for i in range(2)], axis=1)
    dt = np.interp(hi, np.arange(len(t)), t) - np.interp(lo, np.arange(len(t)), t)
    return np.linalg.norm(at(hi) - at(lo), axis=1) / np.maximum(dt, 1e-9)


def _prepare(log: PushLog, arm: ArmTool, task: PushTaskConfig, tool: ToolSpec, cfg: ContactConfig) -> _Prepared:
    tip = arm.tip(log.q)
    tip_v = np.gradient(tip, log.state_t, axis=0)
    # the table top from where the puck lies (a table height error shows here)
    table_top = float(np.median(log.obj_p[:, 2]) - task.puck_height / 2)
    to = log.obj_t
    inside = (to >= log.state_t[0]) & (to <= log.state_t[-1])
    tip_o = np.stack([np.interp(to, log.state_t, tip[:, i]) for i in range(3)], axis=1)
    speed = _speed(to, log.obj_p, 0.2)
    moving = (speed > cfg.rest_speed) & inside
    gap = np.linalg.norm(tip_o[:, :2] - log.obj_p[:, :2], axis=1) - task.puck_radius - tool.radius
    low_enough = tip_o[:, 2] - tool.radius < log.obj_p[:, 2] + task.puck_height / 2
    contact = (gap < cfg.contact_margin) & low_enough & inside
    segments: list[Segment] = []
    idx = np.flatnonzero(moving)
    if len(idx):
        runs, start = [], idx[0]
        for a, b in zip(idx[:-1], idx[1:]):
            if to[b] - to[a] > 2 * cfg.pad:
                runs.append((start, a))
                start = b
        runs.append((start, idx[-1]))
        dto = np.diff(to, append=to[-1])
        for a, b in runs:
            t0, t1 = max(to[a] - cfg.pad, log.state_t[0]), min(to[b] + cfg.pad, log.state_t[-1])
            sel = (to >= t0) & (to <= t1)
            if sel.sum() < 5 or np.max(np.diff(to[sel]), initial=0.0) > 0.25:
                continue  # a tracker outage inside the push: no trustworthy path
            segments.append(Segment(log.name, float(t0), float(t1),
                                    float(np.sum(dto[sel & contact])), float(np.sum(dto[sel & moving & ~contact])),
                                    float(np.linalg.norm(log.obj_p[sel][-1, :2] - log.obj_p[sel][0, :2]))))
    return _Prepared(log, tip, tip_v, table_top, segments, moving, contact)


# ---------------------------------------------------------------------------------- rollouts
@dataclass
class _Replay:
    """The replay model of one log's table and its segments as sysid sequences."""

    spec: mujoco.MjSpec
    model: mujoco.MjModel
    inits: list[np.ndarray]
    controls: list[np.ndarray]  # (T, 6) per segment on the physics grid
    times: list[np.ndarray]
    meas_t: list[np.ndarray]
    meas: list[np.ndarray]  # (K, 3) tracked positions


def _yaw_quat(quat: np.ndarray) -> np.ndarray:
    w, x, y, z = quat
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _windows(prep: _Prepared, seg: Segment) -> list[tuple[float, float, bool]]:
    """A push cut where the tool touches the puck again ((start, end, starts at rest)): each
    replay starts from the tracked puck, so an error in one contact does not carry into the next."""
    to = prep.log.obj_t
    idx = np.flatnonzero((to >= seg.t0) & (to <= seg.t1))
    c = prep.contact[idx]
    starts = [seg.t0]
    seen_contact, clear_since = False, None
    for k, i in enumerate(idx):
        if c[k]:
            if seen_contact and clear_since is not None and to[i] - clear_since >= 0.1:
                starts.append(float(to[i]) - 0.02)
            seen_contact, clear_since = True, None
        elif clear_since is None:
            clear_since = float(to[i])
    ends = [*starts[1:], seg.t1]
    return [(a, b, k == 0) for k, (a, b) in enumerate(zip(starts, ends)) if b - a >= 0.2]


def _replay(prep: _Prepared, task: PushTaskConfig, tool: ToolSpec, dt: float) -> _Replay:
    from mujoco import sysid

    spec = replay_spec(task, tool, prep.table_top, dt)
    model = spec.compile()
    log = prep.log
    to = log.obj_t
    inits, controls, times, meas_t, meas = [], [], [], [], []
    for seg in prep.segments:
        for t0, t1, at_rest in _windows(prep, seg):
            grid = t0 + dt * np.arange(int(np.floor((t1 - t0) / dt)) + 1)
            ctrl = np.empty((len(grid), 6))
            for i in range(3):
                ctrl[:, i] = np.interp(grid, log.state_t, prep.tip[:, i])
                ctrl[:, 3 + i] = np.interp(grid, log.state_t, prep.tip_v[:, i])
            sel = (to >= t0) & (to <= t1)
            if at_rest:  # the puck's start: the first rest samples, averaged
                p0 = log.obj_p[sel][:3].mean(axis=0)
                v0 = np.zeros(2)
            else:  # moving: the tracked position and velocity there (centred differences, 0.1 s)
                p0 = np.array([np.interp(t0, to, log.obj_p[:, i]) for i in range(3)])
                h = 0.05
                v0 = np.array([(np.interp(t0 + h, to, log.obj_p[:, i]) - np.interp(t0 - h, to, log.obj_p[:, i]))
                               / (2 * h) for i in range(2)])
            qpos = np.zeros(model.nq)
            qpos[:3] = ctrl[0, :3]
            qpos[3:6] = [p0[0], p0[1], prep.table_top + task.puck_height / 2]
            qpos[6:10] = _yaw_quat(log.obj_quat[np.flatnonzero(sel)[0]])
            qvel = np.zeros(model.nv)
            qvel[:3] = ctrl[0, 3:]
            qvel[3:5] = v0
            init = sysid.create_initial_state(model, qpos, qvel)
            init[0] = grid[0]
            keep = sel & (to > grid[0]) & (to <= grid[-1])
            if keep.sum() < 5:
                continue
            inits.append(init)
            controls.append(ctrl)
            times.append(grid)
            meas_t.append(to[keep])
            meas.append(log.obj_p[keep])
    return _Replay(spec, model, inits, controls, times, meas_t, meas)


def _set_friction(model: mujoco.MjModel, mu: float) -> None:
    pair = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_PAIR, "puck_table")
    model.pair_friction[pair, :2] = mu


def rollout(model: mujoco.MjModel, init: np.ndarray, ctrl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step the replay model along ``ctrl``: the puck's path (T, 3) and the tool's horizontal
    contact force on the puck (T, 2) after each step."""
    d = mujoco.MjData(model)
    mujoco.mj_setState(model, d, init, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    tool = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "tool")
    puck = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "puck")
    path, force = np.empty((len(ctrl), 3)), np.zeros((len(ctrl), 2))
    f6 = np.zeros(6)
    for k in range(len(ctrl)):
        d.ctrl[:] = ctrl[k]
        mujoco.mj_step(model, d)
        path[k] = d.qpos[3:6]
        for i in range(d.ncon):
            c = d.contact[i]
            if {c.geom1, c.geom2} == {tool, puck}:
                mujoco.mj_contactForce(model, d, i, f6)
                f = c.frame.reshape(3, 3).T @ f6[:3]  # on geom2, world frame
                force[k] += (f if c.geom2 == puck else -f)[:2]
    return path, force


# ---------------------------------------------------------------------------------- forces
def _masked_mean(f: np.ndarray, use: np.ndarray, kern: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.stack([np.convolve(np.where(use, f[:, i], 0.0), kern, mode="same") / np.maximum(count, 1.0)
                     for i in range(f.shape[1])], axis=1)


def _measured_force(prep: _Prepared, arm: ArmTool, cfg: ContactConfig) -> tuple[np.ndarray, ...]:
    """The tool's horizontal force on the puck from the arm, per interval between joint states
    inside a push: (interval mid times, (K, 2) force N, usable). Per interval, not per sample:
    the velocity difference over the interval is the mean acceleration, and the torques at its
    two ends average to the interval's mean torque; an interval whose torque jumps alone (a new
    impedance target arrived inside it: the mean is then unknown; a contact builds up over
    several intervals) is not usable."""
    log = prep.log
    t = log.state_t
    inside = np.zeros(len(t) - 1, bool)
    for seg in prep.segments:
        inside |= (t[1:] >= seg.t0 - 0.1) & (t[:-1] <= seg.t1 + 0.1)
    k = np.flatnonzero(inside)
    dt = t[k + 1] - t[k]
    q = 0.5 * (log.q[k] + log.q[k + 1])
    dq = 0.5 * (log.dq[k] + log.dq[k + 1])
    ddq = (log.dq[k + 1] - log.dq[k]) / dt[:, None]
    tau = 0.5 * (log.tau[k] + log.tau[k + 1])
    dtau = np.max(np.abs(np.diff(log.tau, axis=0)), axis=1)
    jump = dtau[k]
    around = np.maximum(dtau[np.maximum(k - 1, 0)], dtau[np.minimum(k + 1, len(dtau) - 1)])
    ok = ~((jump > cfg.torque_jump_factor * around) & (jump > cfg.torque_jump_floor))
    tip = 0.5 * (prep.tip[k] + prep.tip[k + 1])
    return 0.5 * (t[k] + t[k + 1]), arm.contact_force(q, dq, ddq, tau, tip), ok, k, k + 1


@dataclass
class _Replayed:
    """Every push window replayed with the prior friction and with the fitted one."""

    paths: list[dict[str, Any]]  # per window: tracked, replayed (prior, calibrated) and tool xy (report panels)
    rmse_before: float  # m, tracked vs replayed puck position over every window, prior friction
    rmse_after: float
    have_tau: bool  # every log with pushes has measured torques
    f_meas: list[np.ndarray]  # per window: the arm's contact force on the puck, masked and smoothed
    f_sim: list[np.ndarray]  # the replay's at the prior mass, over the same intervals, alike


def _replay_pushes(preps: list[_Prepared], replays: list[_Replay], arm: ArmTool, cfg: ContactConfig,
                   prior_mu: float, mu_used: float) -> _Replayed:
    """The replays of ``preps``' pushes with ``prior_mu`` and ``mu_used``: the puck paths and, when
    the joint states have torques, the measured and the replayed contact force (for the mass)."""
    paths, err_before, err_after = [], [], []
    f_meas_all, f_sim_all = [], []
    measured: dict[str, tuple[np.ndarray, ...]] = {}
    have_tau = all(p.log.tau is not None for p in preps if p.segments)
    for p, rp in zip([p for p in preps if p.segments], replays):
        m_prior, m_fit = copy.copy(rp.model), copy.copy(rp.model)
        _set_friction(m_prior, prior_mu)
        _set_friction(m_fit, mu_used)
        log = p.log
        if have_tau:
            measured[log.name] = _measured_force(p, arm, cfg)
        for k in range(len(rp.inits)):
            before, _ = rollout(m_prior, rp.inits[k], rp.controls[k])
            after, force = rollout(m_fit, rp.inits[k], rp.controls[k])
            grid = rp.times[k]
            mt, mp = rp.meas_t[k], rp.meas[k]
            pb = np.stack([np.interp(mt, grid, before[:, i]) for i in range(2)], axis=1)
            pa = np.stack([np.interp(mt, grid, after[:, i]) for i in range(2)], axis=1)
            err_before.append(mp[:, :2] - pb)
            err_after.append(mp[:, :2] - pa)
            paths.append({"log": log.name, "t0": float(rp.times[k][0]), "tracked": mp[:, :2].tolist(), "prior": pb.tolist(),
                          "calibrated": pa.tolist(), "tool": [[float(np.interp(t, log.state_t, p.tip[:, i]))
                                                               for i in range(2)] for t in mt]})
            if not have_tau:
                continue
            fm_t, fm, ok, k0, k1 = measured[log.name]
            sel = np.flatnonzero((fm_t >= grid[0]) & (fm_t <= grid[-1]))
            if len(sel) < 3:
                continue
            # the replay's force averaged over the same intervals, masked and smoothed alike
            ia = np.searchsorted(grid, log.state_t[k0[sel]])
            ib = np.searchsorted(grid, log.state_t[k1[sel]])
            csum = np.vstack([np.zeros((1, 2)), np.cumsum(force, axis=0)])
            fs = (csum[ib] - csum[ia]) / np.maximum(ib - ia, 1)[:, None]
            use = ok[sel] & (ib > ia)
            n_w = max(1, int(round(cfg.force_window / max(float(np.median(np.diff(fm_t))), 1e-6))))
            kern = np.ones(n_w)
            count = np.convolve(use.astype(float), kern, mode="same")

            good = count >= 0.5 * n_w
            f_meas_all.append(_masked_mean(fm[sel], use, kern, count)[good])
            f_sim_all.append(_masked_mean(fs, use, kern, count)[good])
    return _Replayed(paths, float(np.sqrt(np.mean(np.concatenate(err_before) ** 2 * 2))),
                     float(np.sqrt(np.mean(np.concatenate(err_after) ** 2 * 2))), have_tau, f_meas_all, f_sim_all)
