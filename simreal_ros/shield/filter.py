"""The per-cycle filter: the command closest to the request that keeps every limit.

Pure functions of (limits, motion state, request, time step, measured state): they return
the command and the new motion state without side effects, so the same code filters the
command that is sent and, in shadow mode, the one that would have been sent.

Position mode, per joint, every limit is an interval for the next target ``q'`` (with
``base = q + v dt``, i.e. continuing at the current velocity):

=============  ==============================================================
jerk           ``base + dt^2 [a - j dt, a + j dt]``
acceleration   ``base + dt^2 [-a_max, a_max]``
velocity       ``q + dt [-v_max, v_max]`` and the jerk-aware velocity viability
position       ``[q_min + margin, q_max - margin]``
effort         ``q_m + ([-tau_max, tau_max] + D dq_m) / K`` (impedance torque)
effort_rate    ``q_m + (tau_prev + dtau_max dt [-1, 1] + D dq_m) / K``
tracking       ``q_m + [-L, L]``, ``L = D v_track / K`` (the target leads the measured arm by at
               most the steady-state lag at ``v_track``: the impedance torque
               ``K (q' - q_m) - D dq_m`` then never accelerates a joint past ``v_track``,
               whatever its inertia and however long the target is held)
overshoot      near a position limit: targets from which the arm, a mass on the impedance
               spring, would not overshoot past the limit were the target held (inertia
               from the mass matrix x ``overshoot_inertia_scale``, plus the push of the
               other joints' torques through it; see :meth:`PositionFilter._overshoot_row`)
=============  ==============================================================

The request is clipped to the intersection. If the intervals do not meet (only possible
for the tracking and torque ones, which depend on the measured state), they are applied in the order
above and a later one is only met as closely as the earlier ones allow. Then the braking
check: if the new state could not stop before a position limit (see
:func:`~simreal_ros.shield.limits.stopping_distance`), *every* joint brakes instead (request
"stop here"), as ros2_control's saturation limiter does.

The arm is checked too, not only the command: a joint that lags its target catches up faster
than the command moves, and a heavy, underdamped joint overshoots a stopped target (measured:
joint 1 went 15 mrad past its limit while the command was braking within it). So every joint
also brakes when a *measured* joint moving towards a limit could not stop inside the robot's
own (untightened) limit: ``q_m + (D/K) dq_m`` (the controller's lag behind a stopped target)
plus the stopping distance from ``dq_m`` at the planned deceleration.

Coupling (steps of at least ``coupling_min_dt``, by default every step): the intervals are per
joint, the arm is not.
A held target step of the heavy joints accelerates them far past the acceleration limit
(60 N m on ~0.5 kg m^2) and the mass matrix passes that on to the light wrist. The command's
net torques ``K (q' - q_m) - D dq_m`` are then scaled down by one factor until no joint's
speed predicted through the inertia (:class:`JointCoupling`) exceeds its limit; the scaled
targets are filtered again (every row above still applies) and labelled ``tracking``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simreal_ros.shield.coupling import JointCoupling
from simreal_ros.shield.limits import ShieldLimits, stopping_distance

#: Row labels of the interval stacks, in priority order.
POSITION_ROWS = ("jerk", "acceleration", "velocity", "velocity", "position", "effort", "effort_rate", "tracking",
                 "position")
N_HARD = 5  # rows that the shield alone controls (always jointly feasible)
EFFORT_ROWS = ("effort", "effort_rate", "position")


@dataclass(frozen=True, slots=True)
class MotionState:
    """What the filter remembers between cycles (robot joint order).

    ``q`` is the last sent command (targets, or torques in effort mode); ``v``/``a`` its
    backward differences; ``tau`` the impedance torque of the last target at the state
    measured then (position mode; None when unknown).
    """

    t: float
    q: np.ndarray
    v: np.ndarray
    a: np.ndarray
    tau: np.ndarray | None = None


@dataclass(slots=True)
class StepResult:
    """The filtered command, the new motion state and why values were changed.

    ``clipped`` marks joints whose command differs from the request; ``kinds`` names the
    limit that bound each of them (only meaningful where ``clipped``).
    """

    command: np.ndarray
    state: MotionState
    clipped: np.ndarray
    kinds: list[str]
    braking: bool = False
    infeasible: bool = False


def intersect(lo_rows: np.ndarray, hi_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Intersect interval rows; when they do not meet, later rows give way to earlier ones."""
    lo = np.fmax.reduce(lo_rows, axis=0)  # fmax/fmin: a NaN bound (overflowed torque row) is ignored
    hi = np.fmin.reduce(hi_rows, axis=0)
    if np.all(lo <= hi):
        return lo, hi, False
    lo, hi = lo_rows[0].copy(), hi_rows[0].copy()
    for lr, hr in zip(lo_rows[1:], hi_rows[1:]):
        lo2 = np.fmin(np.fmax(lo, lr), hi)
        hi = np.fmax(np.fmin(hi, hr), lo2)
        lo = lo2
    return lo, hi, True


def _binding(request, command, lo_rows, hi_rows, labels) -> list[str]:
    up = request > command  # clipped down by an upper bound
    idx = np.where(up, np.argmin(np.abs(hi_rows - command), axis=0), np.argmin(np.abs(lo_rows - command), axis=0))
    return [labels[i] for i in idx]


def viable(lim: ShieldLimits, q: np.ndarray, v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Per joint: can it still stop inside the position limits from (q, v, a)?"""
    tol = 1e-12
    return ((q + stopping_distance(lim, v, a) <= lim.q_hi + tol)
            & (q - stopping_distance(lim, -v, -a) >= lim.q_lo - tol))


class PositionFilter:
    """Position-mode filter with the constants of one limit set precomputed.

    The common case (request within every limit, far from the position limits) runs as a
    scalar loop (:meth:`_fast`, cheaper than numpy calls for 7 joints); otherwise all limit
    rows are computed at once (:meth:`rows`) to clip, brake and label the intervention.
    """

    def __init__(self, lim: ShieldLimits, K: np.ndarray, D: np.ndarray, track_lead: np.ndarray | None = None,
                 arm_limits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 coupling: JointCoupling | None = None, coupling_min_dt: float = 0.0,
                 overshoot_inertia_scale: float | None = None) -> None:
        self.lim, self.K, self.D = lim, np.asarray(K, dtype=float), np.asarray(D, dtype=float)
        self.coupling, self.coupling_min_dt = coupling, coupling_min_dt
        self.inertia_scale = overshoot_inertia_scale if coupling is not None else None
        n = lim.v.shape[0]
        self.track_lead = np.full(n, np.inf) if track_lead is None else np.asarray(track_lead, dtype=float)
        self.track_lead2 = np.vstack([self.track_lead, self.track_lead])
        self.inf2 = np.full((2, n), np.inf)
        ok = self.K > 0
        self.Kinv0 = np.where(ok, 1.0 / np.where(ok, self.K, 1.0), 0.0)
        self.tau_span = np.where(ok, lim.tau * self.Kinv0, np.inf)
        self.dtau_span = np.where(ok, lim.dtau * self.Kinv0, np.inf)
        self.DK = self.D * self.Kinv0
        # (lo, hi, v_max) of the measured arm: it must be able to stop inside [lo, hi] (the
        # robot's own limits) from its measured velocity; None: not checked
        self.arm = arm_limits
        if arm_limits is not None:
            lo_a, hi_a, v_a = (np.asarray(x, dtype=float) for x in arm_limits)
            self.arm = (lo_a, hi_a)
            # no arm check needed farther than this from a limit (stopping distance at v_a)
            inner_arm = (hi_a - lo_a) / 2 - stopping_distance(lim, v_a, np.zeros(n)) - self.DK * v_a - 1e-9
            mid_arm = (lo_a + hi_a) / 2
            self.arm_screen = (mid_arm, inner_arm)
        else:
            inner_arm, mid_arm = np.full(n, np.inf), np.zeros(n)
        self.two_over_j = 2.0 / lim.j
        self._t_grid = np.geomspace(1e-3, 2.0, 48)[:, None]  # s: where the overshoot's peak is sought
        # no braking check needed farther than this from a limit (stopping distance at
        # full velocity and acceleration)
        self.screen = stopping_distance(lim, lim.v, lim.a) + 1e-9
        self.zeros = np.zeros_like(lim.v)
        self.no_clip = np.zeros(lim.v.shape, dtype=bool)
        self.sgn = np.array([[1.0], [-1.0]])
        self.v2 = np.vstack([lim.v, lim.v])
        self.a2 = np.vstack([lim.a, lim.a])
        self.j2 = np.vstack([lim.j, lim.j])
        self.two_over_j2 = np.vstack([self.two_over_j, self.two_over_j])
        self.qlim2 = np.vstack([lim.q_hi, -lim.q_lo])
        self.tau_span2 = np.vstack([self.tau_span, self.tau_span])
        self.dtau_span2 = np.vstack([self.dtau_span, self.dtau_span])
        self.mid = (lim.q_lo + lim.q_hi) / 2
        self.inner = (lim.q_hi - lim.q_lo) / 2 - self.screen
        # per-joint Python floats for the scalar fast path (7 joints: cheaper than numpy calls)
        self._consts = list(zip(*(x.tolist() for x in (
            lim.v, lim.a, lim.j, self.two_over_j, lim.q_lo, lim.q_hi, self.mid, self.inner,
            self.DK, self.Kinv0, self.tau_span, self.dtau_span, self.K, self.D, self.track_lead, mid_arm,
            inner_arm))))

    def rows(self, q, v, a, tau, dtp: float, meas, dt: float | None = None) -> np.ndarray:
        """Every limit as a bound on the next target, both sides at once in signed form:
        ``R[k, 0]`` bounds ``q'`` from above, ``R[k, 1]`` bounds ``-q'`` from above (so the
        lower bound is ``-R[k, 1]``); rows in ``POSITION_ROWS`` order, shape (rows, 2, n)."""
        sgn = self.sgn
        dt2 = dtp * dtp
        room = np.maximum(self.v2 - sgn * v, 0.0)  # velocity left in each direction
        x = 2.0 * room / (dtp + np.sqrt(dt2 + room * self.two_over_j2))  # jerk-aware velocity viability
        sb = sgn * (q + v * dtp)
        out = [sb + dt2 * (sgn * a + self.j2 * dtp), sb + dt2 * self.a2, sgn * q + dtp * self.v2, sb + dt2 * x,
               self.qlim2]
        if meas is not None:
            qm, dqm = meas
            c = qm + self.DK * dqm
            out.append(sgn * c + self.tau_span2)
            # the torque rate is over the real step (after a gap the motion restarts, the torque does not)
            out.append(self.inf2 if tau is None else sgn * (c + tau * self.Kinv0) + self.dtau_span2 * (dt or dtp))
            out.append(sgn * qm + self.track_lead2)
            out.append(self._overshoot_row(qm, dqm, tau))
        return np.array(out)

    def _overshoot_row(self, qm: np.ndarray, dqm: np.ndarray, tau: np.ndarray | None) -> np.ndarray:
        """Near a position limit: the targets from which the arm, were the target held, would
        not overshoot past the (margin-tightened) position limit. Per joint, the arm is a mass
        ``I`` (the mass matrix's diagonal at ``qm`` x ``overshoot_inertia_scale``) on the
        impedance spring and damper: ``x(t) = (qm - r) phi(t) + dqm psi(t)`` about the target
        ``r``, so ``r + x(t) <= q_hi`` at every ``t`` bounds ``r`` from above by
        ``(q_hi - qm phi - dqm psi) / (1 - phi)`` (``phi < 1`` for ``t > 0``); likewise below.
        A heavy, underdamped joint 1 went 7 mrad past its limit while its target was held 25
        mrad inside. The other joints push through the inertia too: the last cycle's net torques
        ``tau`` accelerate joint j by ``tau_j / M_jj``, a torque ``c_i = -sum M_ij tau_j / M_jj``
        on joint i, which shifts where it settles by ``c_i / K_i`` (a braking heavy arm drove
        the wrist 20 mrad past its held target). Away from every limit: no bound."""
        if self.inertia_scale is None or self.arm is None:
            return self.inf2
        mid, inner = self.arm_screen
        if (np.abs(qm - mid) < inner).all():
            return self.inf2
        lim = self.lim
        M = self.coupling.mass(qm)
        m = np.diag(M)
        inertia = m * self.inertia_scale
        K, D = self.K, self.D
        disc = np.sqrt((D * D - 4.0 * K * inertia).astype(complex))
        disc = np.where(np.abs(disc) < 1e-9, 1e-9, disc)  # critically damped: nudge apart
        s1, s2 = (-D + disc) / (2.0 * inertia), (-D - disc) / (2.0 * inertia)
        e1, e2 = np.exp(s1 * self._t_grid), np.exp(s2 * self._t_grid)
        phi = ((s2 * e1 - s1 * e2) / (s2 - s1)).real  # x0 = 1, v0 = 0
        psi = ((e2 - e1) / (s2 - s1)).real  # x0 = 0, v0 = 1
        w = 1.0 - phi
        ok = w > 1e-9
        w = np.where(ok, w, 1.0)
        free = qm * phi + dqm * psi
        shift = 0.0
        if tau is not None:
            acc = tau / m
            shift = -(M @ acc - m * acc) / K  # c / K
        hi = np.where(ok, (lim.q_hi - free) / w, np.inf).min(axis=0) - shift
        lo = np.where(ok, (lim.q_lo - free) / w, -np.inf).max(axis=0) - shift
        return np.vstack([hi, -lo])

    def _fast(self, st: MotionState, request: np.ndarray, dt: float, dtp: float, gap: bool, meas):
        """The common case in scalar Python, with the same formulas (and rounding) as the
        vectorized path: returns None when any joint's intervals do not meet, is near a
        position limit or was clipped (the vectorized path then decides and labels)."""
        sqrt = math.sqrt
        dt2 = dtp * dtp
        q_l, r_l = st.q.tolist(), request.tolist()
        if gap:
            v_l = a_l = [0.0] * len(q_l)
        else:
            v_l, a_l = st.v.tolist(), st.a.tolist()
        has_meas = meas is not None
        if has_meas:
            qm_l, dqm_l = meas[0].tolist(), meas[1].tolist()
            tau_l = st.tau.tolist() if st.tau is not None else None
        vn, an, taun = [], [], []
        for i, (V, A, J, tj, qlo, qhi, mid, inner, DK, Ki, tsp, dsp, K, D, TL, mida, innera) in enumerate(self._consts):
            q, v, a, r = q_l[i], v_l[i], a_l[i], r_l[i]
            # (conditional expressions instead of min(): same values, a third of the cost)
            up = V - v
            up = up if up > 0.0 else 0.0
            dn = V + v
            dn = dn if dn > 0.0 else 0.0
            jd = J * dtp
            u0 = a + jd
            u0 = u0 if u0 < A else A
            x = 2.0 * up / (dtp + sqrt(dt2 + up * tj))
            u0 = u0 if u0 < x else x
            u1 = -a + jd
            u1 = u1 if u1 < A else A
            x = 2.0 * dn / (dtp + sqrt(dt2 + dn * tj))
            u1 = u1 if u1 < x else x
            base = q + v * dtp
            hi = base + dt2 * u0
            hi = hi if hi < qhi else qhi
            nlo = -base + dt2 * u1  # -lo
            nlo = nlo if nlo < -qlo else -qlo
            if has_meas:
                qmi = qm_l[i]
                if not abs(qmi - mida) < innera:  # the arm is near a limit: the vectorized path checks it
                    return None
                x = qmi + TL
                hi = hi if hi < x else x
                x = -qmi + TL
                nlo = nlo if nlo < x else x
                c = qmi + DK * dqm_l[i]
                x = c + tsp
                hi = hi if hi < x else x
                x = -c + tsp
                nlo = nlo if nlo < x else x
                if tau_l is not None:
                    cr = c + tau_l[i] * Ki
                    rr = dsp * dt
                    x = cr + rr
                    hi = hi if hi < x else x
                    x = -cr + rr
                    nlo = nlo if nlo < x else x
            lo = -nlo
            if not (lo <= r <= hi) or not (abs(r - mid) < inner):
                return None
            v1 = (r - q) / dt
            vn.append(v1)
            an.append((v1 - v) / dt)
            if has_meas:
                taun.append(K * (r - qm_l[i]) - D * dqm_l[i])
        return vn, an, (taun if has_meas else None)

    def _arm_overruns(self, meas) -> bool:
        """Could the measured arm, moving towards a limit, not stop before it (braking at the
        planned deceleration from its measured velocity)? The arm can be faster than the
        command (it lags and then catches up, an underdamped heavy joint overshoots): the
        command alone being able to stop does not keep the arm inside."""
        if meas is None or self.arm is None:
            return False
        qm, dqm = meas
        mid, inner = self.arm_screen
        if (np.abs(qm - mid) < inner).all():  # far from every limit: nothing to check
            return False
        lo, hi = self.arm
        z = self.zeros
        lag = self.DK * dqm  # the arm follows the braking target with the controller's lag D/K
        up = (dqm > 0) & (qm + lag + stopping_distance(self.lim, dqm, z) > hi)
        dn = (dqm < 0) & (qm + lag - stopping_distance(self.lim, -dqm, z) < lo)
        return bool((up | dn).any())

    def step(self, st: MotionState, request: np.ndarray, now: float, meas=None, extra_check=None) -> StepResult:
        """Filter one target request at ``now``; with a :class:`JointCoupling` and a step of at
        least ``coupling_min_dt``, the net torques of the filtered command are then scaled down
        (one factor for every joint, the targets recomputed and filtered again) until no
        joint's predicted speed exceeds its limit."""
        res = self._step(st, request, now, meas, extra_check)
        cp = self.coupling
        if cp is None or meas is None or res.braking or res.state.tau is None or now - st.t < self.coupling_min_dt:
            return res
        s = cp.scale(meas[0], meas[1], res.state.tau)
        if s >= 1.0:
            return res
        res2 = self._step(st, meas[0] + (self.D * meas[1] + s * res.state.tau) * self.Kinv0, now, meas, extra_check)
        changed = res2.command != res.command
        base = res.kinds if res.kinds else [""] * len(request)
        res2.kinds = ["tracking" if c else k for c, k in zip(changed.tolist(), base)]
        res2.clipped = res2.command != request
        return res2

    def _step(self, st: MotionState, request: np.ndarray, now: float, meas=None, extra_check=None) -> StepResult:
        """Filter one target request at ``now`` (caller guarantees ``now - st.t >= min_step``).

        ``extra_check(q, v, a) -> bool`` may veto a command (e.g. a Cartesian box): a veto
        makes every joint brake, like a failed braking check.
        """
        lim = self.lim
        dt = now - st.t
        gap = dt > lim.h
        if gap:  # the held target was at rest; plan as if one max-length step had passed
            v = a = self.zeros
            dtp = lim.h
        else:
            v, a, dtp = st.v, st.a, dt
        fast = self._fast(st, request, dt, dtp, gap, meas)
        if fast is not None:  # within every limit, far from the position limits: unchanged
            vn, an, taun = fast
            cmd = request.copy()
            v_new, a_new = np.array(vn), np.array(an)
            if extra_check is None or extra_check(cmd, v_new, a_new):
                return StepResult(cmd, MotionState(now, cmd, v_new, a_new, None if taun is None else np.array(taun)),
                                  self.no_clip, [], False, False)
        q = st.q
        R = self.rows(q, v, a, st.tau, dtp, meas, dt)
        b = np.fmin.reduce(R, axis=0)  # fmin: a NaN bound (overflowed torque row) is ignored
        lo, hi = -b[1], b[0]
        infeasible = not (lo <= hi).all()
        if infeasible:
            lo, hi, infeasible = intersect(-R[:, 1], R[:, 0])
        cmd = np.minimum(np.maximum(request, lo), hi)
        v_new = (cmd - q) / dt
        a_new = (v_new - v) / dt
        braking = False
        kind = None
        near = not (np.abs(cmd - self.mid) < self.inner).all()
        veto = extra_check is not None and not extra_check(cmd, v_new, a_new)
        if veto or (near and not viable(lim, cmd, v_new, a_new).all()) or self._arm_overruns(meas):
            braking = True
            kind = "cartesian" if veto else "position"
            for n_rows in (len(R), N_HARD):  # "stop here", giving up the torque rows if needed
                lo, hi, infeasible = intersect(-R[:n_rows, 1], R[:n_rows, 0])
                infeasible = infeasible or n_rows < len(R)
                cmd = np.minimum(np.maximum(q, lo), hi)
                v_new = (cmd - q) / dt
                a_new = (v_new - v) / dt
                if viable(lim, cmd, v_new, a_new).all():
                    break
        tau = None if meas is None else self.K * (cmd - meas[0]) - self.D * meas[1]
        clipped = cmd != request
        if kind is not None:
            kinds = [kind] * len(cmd)
        elif clipped.any():
            kinds = _binding(request, cmd, -R[:, 1], R[:, 0], POSITION_ROWS)
        else:
            kinds = []
        return StepResult(cmd, MotionState(now, cmd, v_new, a_new, tau), clipped, kinds, braking, infeasible)


def effort_step(lim: ShieldLimits, st: MotionState, request: np.ndarray, now: float, meas=None,
                D=None) -> StepResult:
    """Filter one torque request: torque and torque-rate limits on the torque itself, and a
    damping floor for joints whose measured motion could not stop before a position limit or
    that move faster than the velocity limit.
    """
    dt = min(now - st.t, lim.h)
    r = lim.dtau * dt
    lo_rows = [-lim.tau, st.q - r]
    hi_rows = [lim.tau, st.q + r]
    if meas is not None:
        qm, dqm = meas
        damp = -D * dqm
        d_stop = dqm * dqm / (2.0 * lim.a_brake)
        up = (dqm > 0) & (qm + d_stop >= lim.q_hi) | (qm > lim.q_hi)
        dn = (dqm < 0) & (qm - d_stop <= lim.q_lo) | (qm < lim.q_lo)
        hi = np.where(up, np.minimum(damp, 0.0), np.inf)
        lo = np.where(dn, np.maximum(damp, 0.0), -np.inf)
        # faster than the (tracking-scaled) velocity limit: the torque must slow the joint down
        hi = np.where(dqm > lim.v, np.minimum(hi, -D * (dqm - lim.v)), hi)
        lo = np.where(dqm < -lim.v, np.maximum(lo, -D * (dqm + lim.v)), lo)
        lo_rows.append(lo)
        hi_rows.append(hi)
    lo_rows, hi_rows = np.array(lo_rows), np.array(hi_rows)
    lo, hi, infeasible = intersect(lo_rows, hi_rows)
    cmd = np.minimum(np.maximum(request, lo), hi)
    clipped = cmd != request
    kinds = _binding(request, cmd, lo_rows, hi_rows, EFFORT_ROWS) if clipped.any() else []
    z = np.zeros_like(cmd)
    return StepResult(cmd, MotionState(now, cmd, z, z, None), clipped, kinds, False, infeasible)
