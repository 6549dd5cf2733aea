"""Per-joint Kalman filter over position, velocity and acceleration (ROS-free).

Each joint is an independent constant-acceleration model driven by white jerk (spectral
density ``jerk_psd``), measured in position and (optionally) velocity; the measured effort
has its own random-walk filter. All joints are updated together with vectorised numpy.

What the real world does to a sensor stream, and what this filter does about it:

* **Missing samples**: nothing to do; the next update predicts over the longer ``dt`` and
  the covariance grows accordingly. :meth:`JointKalmanFilter.predict` extrapolates (with
  growing covariance) to any later time, e.g. the time of use to compensate latency.
* **Outliers**: each joint's innovation is gated by its Mahalanobis distance (chi-square
  with 1 or 2 degrees of freedom at ``gate_probability``); a gated joint is predicted only,
  and counted. After ``max_consecutive_rejects`` rejections in a row the joint is
  re-initialised from the measurement (it was the filter, not the sensor, that was wrong).
* **Duplicated / out-of-order timestamps**: ``dt == 0`` is a duplicate, ``dt < 0`` is out
  of order; both are dropped and counted; ``dt`` is never negative.
* **Stream restart**: a timestamp more than ``restart_backjump`` s in the past, or a gap
  longer than ``max_gap`` s, re-initialises the filter from that sample.
* Non-finite measurement values are refused with :class:`ValueError` (nothing changes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

from simreal_ros.configs import from_mapping
from simreal_ros.settings import setting, validate_fields

#: Update outcomes reported by :meth:`JointKalmanFilter.update` (and counted in ``counts``).
OUTCOMES = ("initialized", "accepted", "duplicate", "out_of_order", "restart", "gap_reset")


@dataclass(frozen=True)
class KalmanConfig:
    """Noise model and robustness settings (SI units, radians); each field declares its
    bounds and meaning once (the node's ``kalman.*`` parameters derive from them).

    ``velocity_delay``: MuJoCo's semi-implicit Euler reports the mean velocity of the last
    step (half a physics step behind the position): without it, at 1 rad/s the filter's
    positions are off by 0.5 mrad, the size of the position noise. Real drivers that
    difference or filter encoder positions have a similar lag.
    ``position_bias_std`` is not part of the filter: it is added to the *reported* position
    variance (:meth:`StateEstimator.estimate`) so that it stays honest.
    """

    position_noise_std: float = setting(5e-4, "position measurement noise", unit="rad", low=1e-9, high=1.0)
    velocity_noise_std: float = setting(1e-2, "velocity measurement noise", unit="rad/s", low=1e-9, high=100.0)
    effort_noise_std: float = setting(0.2, "effort measurement noise", unit="N m", low=1e-9, high=1000.0)
    jerk_psd: float = setting(1e4, "white-jerk process noise spectral density: how fast the acceleration may "
                              "change between samples", unit="(rad/s^3)^2 s", low=1e-6, high=1e12)
    effort_rate_psd: float = setting(1e4, "random-walk spectral density of the effort", unit="(N m/s)^2 s",
                                     low=1e-6, high=1e12)
    initial_acceleration_std: float = setting(10.0, "prior std of the acceleration at (re)initialisation",
                                              unit="rad/s^2", low=1e-6, high=1e4)
    gate_probability: float = setting(0.99999, "outlier gate: innovations less likely than 1 - this are rejected",
                                      low=0.5, high=0.999999999)
    max_consecutive_rejects: int = setting(20, "re-initialise a joint after this many rejections in a row",
                                           low=1, high=100000)
    max_gap: float = setting(0.5, "a longer gap between samples re-initialises the filter", unit="s",
                             low=1e-4, high=3600.0)
    restart_backjump: float = setting(0.5, "a stamp this far before the last one is a restart of the stream",
                                      unit="s", low=1e-4, high=3600.0)
    velocity_delay: float = setting(0.0, "how long ago the measured velocity was the true one (MuJoCo sim: half a "
                                    "physics step)", unit="s", low=0.0, high=0.1)
    position_bias_std: float = setting(0.0, "std of an unobservable constant sensor offset (calibration), added to "
                                       "the reported position variance", unit="rad", low=0.0, high=0.1)

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KalmanConfig:
        return from_mapping(cls, data, "kalman")


def _transition(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """State transition ``F`` and unit-density white-jerk process noise ``Q`` over ``dt``."""
    F = np.array([[1.0, dt, 0.5 * dt * dt], [0.0, 1.0, dt], [0.0, 0.0, 1.0]])
    d2, d3, d4, d5 = dt**2, dt**3, dt**4, dt**5
    Q = np.array([[d5 / 20, d4 / 8, d3 / 6], [d4 / 8, d3 / 3, d2 / 2], [d3 / 6, d2 / 2, dt]])
    return F, Q


@dataclass
class UpdateResult:
    """What one :meth:`JointKalmanFilter.update` did."""

    outcome: str
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per joint: gated as outlier
    effort_rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per joint: effort gated


class JointKalmanFilter:
    """Independent ``[q, dq, ddq]`` filters for ``n`` joints plus an effort filter.

    Args:
        n_joints: number of joints.
        config: see :class:`KalmanConfig`.
    """

    def __init__(self, n_joints: int, config: KalmanConfig | None = None) -> None:
        if n_joints < 1:
            raise ValueError(f"n_joints must be >= 1, got {n_joints}")
        self.n = int(n_joints)
        self.config = cfg = config or KalmanConfig()
        self._R = np.diag([cfg.position_noise_std**2, cfg.velocity_noise_std**2])
        self._gate2 = -2.0 * math.log(1.0 - cfg.gate_probability)  # chi-square, 2 dof
        self._gate1 = NormalDist().inv_cdf(0.5 + 0.5 * cfg.gate_probability) ** 2  # chi-square, 1 dof
        self.counts: dict[str, int] = dict.fromkeys((*OUTCOMES, "outliers", "effort_outliers",
                                                             "acceleration_outliers", "reinitialized_joints"), 0)
        self.t: float | None = None
        self.x = np.zeros((self.n, 3))
        self.P = np.zeros((self.n, 3, 3))
        self.tau = np.zeros(self.n)
        self.tau_var = np.zeros(self.n)
        self._has_tau = False
        self._rejects = np.zeros(self.n, int)
        self._since_symmetrized = 0
        self._last_dt = math.nan  # predict()'s transition cache (NaN: none yet)

    @property
    def initialized(self) -> bool:
        return self.t is not None

    @property
    def has_effort(self) -> bool:
        """Whether the stream carries efforts (the effort estimate means something)."""
        return self._has_tau

    # ------------------------------------------------------------------ helpers
    def _checked(self, values: Any, what: str) -> np.ndarray | None:
        if values is None:
            return None
        arr = np.asarray(values, dtype=float)
        if arr.shape != (self.n,):
            raise ValueError(f"{what} must have {self.n} values, got shape {arr.shape}")
        if not math.isfinite(arr.sum()) and not np.all(np.isfinite(arr)):  # one reduction in the common case
            raise ValueError(f"{what} contains non-finite values: {arr}")
        return arr

    def _init_joints(self, mask: np.ndarray, q: np.ndarray, dq: np.ndarray | None) -> None:
        cfg = self.config
        self.x[mask, 0] = q[mask]
        self.x[mask, 1] = 0.0 if dq is None else dq[mask]
        self.x[mask, 2] = 0.0
        # Without a velocity measurement, the prior velocity spread is the velocity limit's order.
        v_std = cfg.velocity_noise_std if dq is not None else 2.0
        self.P[mask] = np.diag([cfg.position_noise_std**2, v_std**2, cfg.initial_acceleration_std**2])
        self._rejects[mask] = 0

    def reset(self) -> None:
        """Forget everything; the next sample initialises the filter."""
        self.t = None
        self._has_tau = False
        self._rejects[:] = 0

    def _init_tau(self, tau: np.ndarray | None) -> None:
        self._has_tau = tau is not None
        if tau is not None:
            self.tau = tau.copy()
            self.tau_var = np.full(self.n, self.config.effort_noise_std**2)

    # ------------------------------------------------------------------ filter
    def predict(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """State ``(x, P, tau, tau_var)`` extrapolated to time ``t`` without changing the filter.

        ``t`` earlier than the last sample returns the current estimate (never a negative dt).
        """
        if self.t is None:
            raise RuntimeError("the filter has no sample yet")
        dt = max(0.0, float(t) - self.t)
        if dt == 0.0:
            return self.x.copy(), self.P.copy(), self.tau.copy(), self.tau_var.copy()
        if dt != self._last_dt:  # a driver's samples come at one period: F and Q are reused
            F, Q = _transition(dt)
            self._last_dt, self._FT, self._F, self._jQ = dt, F.T.copy(), F, self.config.jerk_psd * Q
        x = self.x @ self._FT
        P = self._F @ self.P @ self._FT + self._jQ
        return x, P, self.tau.copy(), self.tau_var + self.config.effort_rate_psd * dt

    def update(self, t: float, q: Any, dq: Any = None, tau: Any = None) -> UpdateResult:
        """Fuse one sample taken at time ``t`` (s); ``dq``/``tau`` may be ``None`` (not measured).

        Raises:
            ValueError: wrong sizes or non-finite values (the filter is unchanged).
        """
        if not math.isfinite(t):
            raise ValueError(f"timestamp must be finite, got {t}")
        q = self._checked(q, "position")
        dq = self._checked(dq, "velocity")
        tau = self._checked(tau, "effort")
        cfg = self.config
        outcome = None
        if self.t is None:
            outcome = "initialized"
        else:
            dt = t - self.t
            if dt < -cfg.restart_backjump:
                outcome = "restart"
            elif dt > cfg.max_gap:
                outcome = "gap_reset"
            elif dt == 0.0:
                self.counts["duplicate"] += 1
                return UpdateResult("duplicate", np.zeros(self.n, bool), np.zeros(self.n, bool))
            elif dt < 0.0:
                self.counts["out_of_order"] += 1
                return UpdateResult("out_of_order", np.zeros(self.n, bool), np.zeros(self.n, bool))
        if outcome is not None:
            self._init_joints(np.ones(self.n, bool), q, dq)
            self._init_tau(tau)
            self.t = float(t)
            self.counts[outcome] += 1
            return UpdateResult(outcome, np.zeros(self.n, bool), np.zeros(self.n, bool))

        x, P, tau_pred, tau_var = self.predict(t)
        rejected = self._correct(x, P, q, dq)
        self.x, self.P, self.t = x, P, float(t)
        tau_rejected = self._correct_tau(tau_pred, tau_var, tau)
        self.counts["accepted"] += 1
        return UpdateResult("accepted", rejected, tau_rejected)

    def _correct(self, x: np.ndarray, P: np.ndarray, q: np.ndarray, dq: np.ndarray | None) -> np.ndarray:
        """Measurement update in place on ``x``/``P``; returns the per-joint outlier mask."""
        # Component form (per joint 3x3, 1 or 2 measurements): several times faster than
        # batched matrix products on arrays this small.
        c0 = P[:, :, 0].copy()  # column 0 of P == row 0 (symmetric)
        nu0 = q - x[:, 0]
        if dq is None:
            S = c0[:, 0] + self._R[0, 0]
            ok = nu0 * nu0 / S <= self._gate1
            K0 = c0 * (ok / S)[:, None]
            x += K0 * nu0[:, None]
            P -= K0[:, :, None] * c0[:, None, :]
        else:
            # velocity row h = [0, 1, -tau]: the sensor reports the velocity tau seconds ago
            tau = self.config.velocity_delay
            c1 = P[:, :, 1] - tau * P[:, :, 2] if tau else P[:, :, 1].copy()
            nu1 = dq - (x[:, 1] - tau * x[:, 2] if tau else x[:, 1])
            s00, s01 = c0[:, 0] + self._R[0, 0], c1[:, 0]
            s11 = (c1[:, 1] - tau * c1[:, 2] if tau else c1[:, 1]) + self._R[1, 1]
            det = s00 * s11 - s01 * s01
            d2 = (s11 * nu0 * nu0 - 2.0 * s01 * nu0 * nu1 + s00 * nu1 * nu1) / det
            ok = d2 <= self._gate2
            g = (ok / det)[:, None]
            K0 = (c0 * s11[:, None] - c1 * s01[:, None]) * g
            K1 = (c1 * s00[:, None] - c0 * s01[:, None]) * g
            x += K0 * nu0[:, None] + K1 * nu1[:, None]
            P -= K0[:, :, None] * c0[:, None, :] + K1[:, :, None] * c1[:, None, :]
        self._since_symmetrized += 1
        if self._since_symmetrized >= 64:  # the update is symmetric but for round-off: clean it now and then
            P[:] = 0.5 * (P + P.transpose(0, 2, 1))
            self._since_symmetrized = 0
        if ok.all():  # the common case: no bookkeeping
            if self._rejects.any():
                self._rejects[:] = 0
            return ~ok
        rejected = ~ok
        self.counts["outliers"] += int(rejected.sum())
        self._rejects = np.where(rejected, self._rejects + 1, 0)
        stuck = self._rejects >= self.config.max_consecutive_rejects
        if np.any(stuck):
            self.x, self.P = x, P
            self._init_joints(stuck, q, dq)
            x[:], P[:] = self.x, self.P
            self.counts["reinitialized_joints"] += int(stuck.sum())
        return rejected

    def fuse_acceleration(self, ddq: np.ndarray, std: np.ndarray | float) -> np.ndarray:
        """Fuse an acceleration measurement at the current time (e.g. from torque through a
        dynamics model; see :class:`~simreal_ros.estimator.estimator.StateEstimator`).

        Gated like the other measurements (1 dof); returns the per-joint outlier mask.
        """
        if self.t is None:
            raise RuntimeError("the filter has no sample yet")
        ddq = self._checked(ddq, "acceleration")
        P = self.P
        c2 = P[:, :, 2].copy()
        nu = ddq - self.x[:, 2]
        S = c2[:, 2] + np.square(std)
        ok = nu * nu / S <= self._gate1
        K = c2 * (ok / S)[:, None]
        self.x += K * nu[:, None]
        P -= K[:, :, None] * c2[:, None, :]
        P[:] = 0.5 * (P + P.transpose(0, 2, 1))
        self.counts["acceleration_outliers"] += int((~ok).sum())
        return ~ok

    def _correct_tau(self, tau_pred: np.ndarray, tau_var: np.ndarray, tau: np.ndarray | None) -> np.ndarray:
        """Effort update (gated like the joints, 1 dof); returns the per-joint outlier mask."""
        none = np.zeros(self.n, bool)
        if tau is None:
            self.tau, self.tau_var = tau_pred, tau_var
            return none
        if not self._has_tau:
            self._init_tau(tau)
            return none
        nu = tau - tau_pred
        S = tau_var + self.config.effort_noise_std**2
        ok = nu * nu / S <= self._gate1
        k = np.where(ok, tau_var / S, 0.0)
        self.tau = tau_pred + k * nu
        self.tau_var = (1.0 - k) * tau_var
        self.counts["effort_outliers"] += int((~ok).sum())
        return ~ok
