"""Online belief over hidden dynamics: friction and payload with uncertainty (ROS-free).

The parameters ``theta = [b_1..b_n, fc_1..fc_n, m, a_1..a_n]`` (viscous friction N m s/rad,
Coulomb friction N m, payload kg, extra reflected inertia ("armature") kg m^2) enter the
measured torque linearly (see :mod:`simreal_ros.estimator.dynamics`). The armature terms
are nuisance parameters for the policy but matter for the fit: a real motor's rotor
inertia is missing from the nominal model, and MuJoCo's implicit integration of the
impedance controller's damping ``kd`` acts like an extra inertia ``kd * dt`` per joint
(measured: 0.05 kg m^2 on joints 1-4 at 1 kHz, larger than joint 7's own inertia). They are estimated by recursive least squares
on whitened rows (one row per joint and update), which makes the RLS matrix ``P`` the
parameter covariance. Forgetting is a factor ``lambda`` plus a random-walk drift per
parameter (in physical units per second), so the estimate follows slow changes and its
covariance stays bounded when the motion stops exciting a parameter.

Accelerations are never differentiated causally (a lagging acceleration biases viscous
friction): each update uses a sample ``window`` s in the past, with position, velocity and
acceleration from a quadratic least-squares fit of the measured samples centred on it.
Samples the Kalman filter gated as outliers never enter the buffer.

Belief vector layout (:meth:`HiddenParameterBelief.vector`, published on
``/simreal/belief``): ``[theta (3n+1), std (3n+1)]`` i.e. for the 7-joint arm (44 values)
``[b_1..b_7, fc_1..fc_7, m, a_1..a_7, std(b_1)..std(b_7), std(fc_1)..std(fc_7), std(m),
std(a_1)..std(a_7)]``. :func:`parameter_names` gives the names with units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from simreal_ros.configs import from_mapping
from simreal_ros.estimator.dynamics import InverseDynamics
from simreal_ros.settings import SettingError, setting, validate_fields


@dataclass(frozen=True)
class BeliefConfig:
    """Settings of the hidden-parameter belief; each field declares its bounds and meaning once
    (the node's ``belief.*`` parameters derive from them).

    ``update_period`` decimates: rows closer than the fit window are strongly correlated, so
    updating at every sample adds cost, not information, and would overstate the certainty.
    ``effort_delay``: the MuJoCo sim measures the actuator force of the step that led to the
    state (one physics step); a 1 ms misalignment biases viscous friction by ``dt * dg/dq``,
    about 0.03 N m s/rad on the shoulder. The drifts are the forgetting in physical terms.
    """

    window: float = setting(0.075, "half width of the centred fit (the belief lags by this)", unit="s",
                            low=0.002, high=1.0)
    update_period: float = setting(0.1, "time between RLS updates", unit="s", low=1e-4, high=10.0)
    effort_delay: float = setting(0.0, "how much older the effort of a sample is than its position and velocity "
                                  "(MuJoCo sim: one physics step); below window", unit="s", low=0.0, high=0.5)
    min_speed: float = setting(0.1, "rows of slower joints are left out of an update (stiction)", unit="rad/s",
                               low=1e-4, high=10.0)
    forgetting: float = setting(1.0, "RLS forgetting factor per update", low=0.5, high=1.0)
    prior_viscous_std: float = setting(2.0, "prior std of viscous friction", unit="N m s/rad", low=1e-6, high=1e3)
    prior_coulomb_std: float = setting(2.0, "prior std of Coulomb friction", unit="N m", low=1e-6, high=1e3)
    prior_payload_std: float = setting(5.0, "prior std of the payload", unit="kg", low=1e-6, high=1e3)
    prior_armature_std: float = setting(0.2, "prior std of the armature", unit="kg m^2", low=1e-6, high=1e3)
    drift_viscous: float = setting(1e-4, "random-walk drift of viscous friction", unit="N m s/rad per sqrt(s)",
                                   low=0.0, high=1e3)
    drift_coulomb: float = setting(1e-4, "random-walk drift of Coulomb friction", unit="N m per sqrt(s)",
                                   low=0.0, high=1e3)
    drift_payload: float = setting(1e-4, "random-walk drift of the payload", unit="kg per sqrt(s)",
                                   low=0.0, high=1e3)
    drift_armature: float = setting(1e-5, "random-walk drift of the armature", unit="kg m^2 per sqrt(s)",
                                    low=0.0, high=1e3)
    residual_std_floor: float = setting(0.02, "lower bound of the per-joint residual std that weights rows",
                                        unit="N m", low=1e-6, high=100.0)
    residual_std_init: float = setting(0.5, "initial per-joint residual std", unit="N m", low=1e-6, high=100.0)
    residual_time_constant: float = setting(2.0, "time constant of the running residual variance", unit="s",
                                            low=1e-3, high=1e4)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.effort_delay >= self.window:
            raise SettingError(f"BeliefConfig 'effort_delay' = {self.effort_delay}: must be below 'window' "
                               f"= {self.window}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BeliefConfig:
        return from_mapping(cls, data, "belief")


def parameter_names(joint_names: tuple[str, ...]) -> list[str]:
    """Names of the belief parameters, in layout order, with units."""
    return ([f"viscous_friction/{j} [N m s/rad]" for j in joint_names]
            + [f"coulomb_friction/{j} [N m]" for j in joint_names] + ["payload_mass [kg]"]
            + [f"armature/{j} [kg m^2]" for j in joint_names])


class RecursiveLeastSquares:
    """Weighted RLS with forgetting factor and random-walk drift (a Kalman filter on ``theta``).

    Args:
        theta0: prior mean.
        P0: prior covariance.
        forgetting: factor ``lambda`` in (0, 1] applied at every update.
    """

    def __init__(self, theta0: np.ndarray, P0: np.ndarray, forgetting: float = 1.0) -> None:
        self.theta = np.array(theta0, dtype=float)
        self.P = np.array(P0, dtype=float)
        self.forgetting = float(forgetting)

    def drift(self, Qd: np.ndarray) -> None:
        """Let the parameters drift: ``P <- P / lambda + Qd`` (``Qd`` diagonal, as a vector)."""
        if self.forgetting != 1.0:
            self.P /= self.forgetting
        self.P[np.diag_indices_from(self.P)] += Qd

    def update(self, Phi: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Fuse rows ``y ~ Phi theta + e`` with ``e ~ N(0, diag(sigma^2))``; returns a-priori residuals."""
        e = y - Phi @ self.theta
        A = Phi / sigma[:, None]
        PA = self.P @ A.T
        S = A @ PA + np.eye(len(y))
        K = np.linalg.solve(S, PA.T).T
        self.theta += K @ (e / sigma)
        self.P -= K @ PA.T
        self.P = 0.5 * (self.P + self.P.T)
        return e


@dataclass(frozen=True)
class BeliefState:
    """The belief at one time: estimates and standard deviations in layout order."""

    stamp: float  # time of the sample the latest update was centred on (s)
    values: np.ndarray
    std: np.ndarray
    updates: int
    residual_std: np.ndarray  # per joint (N m)

    @property
    def n_joints(self) -> int:
        return (len(self.values) - 1) // 3

    @property
    def viscous(self) -> np.ndarray:
        return self.values[: self.n_joints]

    @property
    def coulomb(self) -> np.ndarray:
        return self.values[self.n_joints: 2 * self.n_joints]

    @property
    def payload(self) -> float:
        return float(self.values[2 * self.n_joints])

    @property
    def armature(self) -> np.ndarray:
        return self.values[2 * self.n_joints + 1:]

    def vector(self) -> np.ndarray:
        """``[values, std]`` (see the module docstring for the layout)."""
        return np.concatenate([self.values, self.std])

    def as_dict(self, joint_names: tuple[str, ...]) -> dict[str, Any]:
        """Plain-data form for calibration and reports: per quantity, per joint, value and std.

        ``{"viscous_friction": {joint: {"value", "std"}}, "coulomb_friction": ..., "armature": ...,
        "payload_mass": {"value", "std"}, "units": {...}, "updates": n, "stamp": t}``
        """
        n = self.n_joints
        if len(joint_names) != n:
            raise ValueError(f"need {n} joint names, got {len(joint_names)}")

        def per_joint(start: int) -> dict[str, dict[str, float]]:
            return {j: {"value": float(self.values[start + i]), "std": float(self.std[start + i])}
                    for i, j in enumerate(joint_names)}

        return {
            "viscous_friction": per_joint(0),
            "coulomb_friction": per_joint(n),
            "payload_mass": {"value": float(self.values[2 * n]), "std": float(self.std[2 * n])},
            "armature": per_joint(2 * n + 1),
            "units": {"viscous_friction": "N m s/rad", "coulomb_friction": "N m", "payload_mass": "kg",
                      "armature": "kg m^2"},
            "updates": int(self.updates),
            "stamp": float(self.stamp),
        }


class HiddenParameterBelief:
    """Online estimate of viscous/Coulomb friction per joint and the payload mass.

    Feed every accepted measurement with :meth:`push`; the estimate updates with a lag of
    ``config.window`` at ``config.update_period``.

    Args:
        dynamics: nominal inverse dynamics (builds the package's Panda when ``None``).
        config: see :class:`BeliefConfig`.
    """

    def __init__(self, dynamics: InverseDynamics | None = None, config: BeliefConfig | None = None) -> None:
        self.dynamics = dynamics or InverseDynamics()
        self.config = cfg = config or BeliefConfig()
        self.n = n = self.dynamics.n_joints
        self.names = parameter_names(self.dynamics.robot.joint_names)
        prior = np.concatenate([np.full(n, cfg.prior_viscous_std), np.full(n, cfg.prior_coulomb_std),
                                [cfg.prior_payload_std], np.full(n, cfg.prior_armature_std)])
        self._P0 = np.diag(prior**2)
        self._drift_rate = np.concatenate([np.full(n, cfg.drift_viscous), np.full(n, cfg.drift_coulomb),
                                           [cfg.drift_payload], np.full(n, cfg.drift_armature)]) ** 2
        cap = 4096
        self._t = np.empty(cap)
        self._x = np.empty((cap, 3 * n))  # q | dq | tau
        self.reset()

    def reset(self) -> None:
        """Forget the buffer and the estimate (back to the prior)."""
        self.rls = RecursiveLeastSquares(np.zeros(3 * self.n + 1), self._P0.copy(), self.config.forgetting)
        self.residual_var = np.full(self.n, self.config.residual_std_init**2)
        self.updates = 0
        self.stamp = math.nan
        self._len = 0
        self._next_center = 0
        self._last_update_t = -math.inf

    def clear_buffer(self) -> None:
        """Drop buffered samples (after a stream restart) but keep the estimate."""
        self._len = 0
        self._next_center = 0
        self._last_update_t = -math.inf  # the new stream's clock may start anywhere

    # ------------------------------------------------------------------ samples
    def push(self, t: float, q: np.ndarray, dq: np.ndarray, tau: np.ndarray) -> bool:
        """Add one accepted sample (increasing ``t``); returns True when the estimate changed."""
        if self._len and t <= self._t[self._len - 1]:
            return False
        if self._len == len(self._t):
            self._compact(force=True)
        i = self._len
        self._t[i] = t
        n = self.n
        self._x[i, :n], self._x[i, n:2 * n], self._x[i, 2 * n:] = q, dq, tau
        self._len += 1
        changed = False
        W = self.config.window + max(self.config.effort_delay, 0.0)
        while self._next_center < self._len and self._t[self._next_center] + W <= t:
            c = self._next_center
            self._next_center += 1
            if self._t[c] - self._last_update_t >= self.config.update_period - 1e-9:
                changed |= self._update_at(c)
        self._compact()
        return changed

    def _compact(self, force: bool = False) -> None:
        """Drop samples no future centre needs (amortised: only once half the buffer is stale)."""
        if not force and self._len < len(self._t) // 2:
            return
        if self._next_center >= self._len:
            keep_from = self._len
        else:
            keep_from = int(np.searchsorted(self._t[: self._len], self._t[self._next_center] - self.config.window))
        if force and keep_from == 0:  # the window holds more samples than the buffer: drop the oldest half
            keep_from = self._len // 2
            self._next_center = max(self._next_center, keep_from)
        if keep_from == 0 or (not force and keep_from < len(self._t) // 2):
            return
        m = self._len - keep_from
        self._t[:m] = self._t[keep_from: self._len]
        self._x[:m] = self._x[keep_from: self._len]
        self._len = m
        self._next_center -= keep_from

    # ------------------------------------------------------------------ estimate
    def _update_at(self, c: int) -> bool:
        cfg, n = self.config, self.n
        tc = self._t[c]
        avg = self._window_average(tc)
        if avg is None:
            return False
        q, dq, ddq, tau, steady = avg
        tau_id, y_payload = self.dynamics(q, dq, ddq)
        rows = np.flatnonzero((np.abs(dq) >= cfg.min_speed) & steady)
        dt = tc - self._last_update_t if math.isfinite(self._last_update_t) else cfg.update_period
        self._last_update_t = tc
        self.rls.drift(self._drift_rate * min(dt, 1.0))
        if rows.size == 0:
            return False
        Phi = np.zeros((rows.size, 3 * n + 1))
        r = np.arange(rows.size)
        Phi[r, rows] = dq[rows]
        Phi[r, n + rows] = np.sign(dq[rows])
        Phi[:, 2 * n] = y_payload[rows]
        Phi[r, 2 * n + 1 + rows] = ddq[rows]
        y = tau[rows] - tau_id[rows]
        prior_var = np.einsum("ij,jk,ik->i", Phi, self.rls.P, Phi)
        e = self.rls.update(Phi, y, np.sqrt(self.residual_var[rows]))
        alpha = min(1.0, dt / cfg.residual_time_constant)
        noise = np.maximum(e * e - prior_var, 0.0)
        self.residual_var[rows] = np.maximum((1 - alpha) * self.residual_var[rows] + alpha * noise,
                                             cfg.residual_std_floor**2)
        self.updates += 1
        self.stamp = float(tc)
        return True

    def _weights(self, t0: float) -> tuple[slice, np.ndarray, np.ndarray, np.ndarray] | None:
        """Samples within the window around ``t0``: slice, offsets, Hann weights, derivative weights."""
        W = self.config.window
        ts = self._t[: self._len]
        lo = int(np.searchsorted(ts, t0 - W))
        hi = int(np.searchsorted(ts, t0 + W, side="right"))
        t = ts[lo:hi]
        s = t - t0
        if hi - lo < 7 or np.count_nonzero(s < 0) < 3 or np.count_nonzero(s > 0) < 3:
            return None  # too few samples on either side
        dt = np.gradient(t)  # local sample spacing (irregular after drops)
        w = (1.0 + np.cos(np.pi * s / W)) * dt
        w /= w.sum()
        d = np.sin(np.pi * s / W) * dt  # shape of -w'(s)
        d -= d.sum() * w  # zero sum: a constant velocity has no acceleration
        d /= d @ s  # unit gain on a linear velocity ramp
        return slice(lo, hi), s, w, d

    def _window_average(self, tc: float) -> tuple[np.ndarray, ...] | None:
        """Hann-weighted averages of q, dq, tau around ``tc`` and the *consistent* ddq.

        The average of ``ddq`` under weights ``w`` is ``-sum w'(t) dq(t)`` (integration by
        parts), so torque and acceleration see exactly the same smoothing and whatever the
        window cannot resolve (impedance-controller ringing) cancels instead of biasing.
        Efforts stamped ``t`` describe time ``t - effort_delay``; their window is shifted
        accordingly. Also returns, per joint, whether the velocity kept its sign over the
        whole window (Coulomb friction is only a sign function while it does).
        """
        n = self.n
        kin = self._weights(tc)
        eff = self._weights(tc + self.config.effort_delay)
        if kin is None or eff is None:
            return None
        sl, _, w, d = kin
        X = self._x[sl, : 2 * n]
        avg = w @ X
        q, dq = avg[:n], avg[n:]
        ddq = d @ X[:, n:]
        tau = eff[2] @ self._x[eff[0], 2 * n:]
        steady = np.all(X[:, n:] * np.sign(dq) > 0, axis=0)
        return q, dq, ddq, tau, steady

    def state(self) -> BeliefState:
        """The current estimate with standard deviations (layout: see the module docstring)."""
        std = np.sqrt(np.maximum(np.diag(self.rls.P), 0.0))
        return BeliefState(self.stamp, self.rls.theta.copy(), std, self.updates, np.sqrt(self.residual_var))
