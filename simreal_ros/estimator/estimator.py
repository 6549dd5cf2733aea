"""The state estimator: Kalman filter + hidden-parameter belief behind one interface (ROS-free).

:class:`StateEstimator` takes raw joint samples (stamped at acquisition, robot joint order)
and answers two questions: *where is the arm now* (:meth:`StateEstimator.estimate`, the
filtered state predicted forward to the time of use, with covariance) and *what did the
simulator get wrong* (:meth:`StateEstimator.belief`, friction, payload and armature with
standard deviations).

Covariance vector layout (:func:`covariance_vector`, published on
``/simreal/state_covariance``): per joint, in robot order, the five values
``[var(q), cov(q, dq), var(dq), var(ddq), var(effort)]`` (rad^2, rad^2/s, rad^2/s^2,
rad^2/s^4, N^2 m^2): a ``n x 5`` row-major matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from simreal_ros.estimator.belief import BeliefConfig, BeliefState, HiddenParameterBelief, parameter_names
from simreal_ros.estimator.dynamics import InverseDynamics
from simreal_ros.estimator.kalman import JointKalmanFilter, KalmanConfig, UpdateResult
from simreal_ros.robot import RobotModel, load_robot

#: Column labels of the covariance layout.
COVARIANCE_FIELDS = ("var_position", "cov_position_velocity", "var_velocity", "var_acceleration", "var_effort")


@dataclass(frozen=True)
class EstimatorConfig:
    """Settings of :class:`StateEstimator`.

    Attributes:
        kalman: filter noise model and robustness settings.
        belief: hidden-parameter estimation settings.
        belief_enabled: run the belief (costs an inverse-dynamics pair per update).
        latency: known delay (s) between acquisition and use; :meth:`StateEstimator.estimate`
            predicts this far beyond the newest sample by default.
        torque_acceleration: also feed the filter the acceleration the measured torque
            produces through the nominal model plus the current belief (forward dynamics
            per sample: roughly doubles the cost; off by default).
        acceleration_noise_std: std (rad/s^2) of the model error of that acceleration; the
            effort noise (``kalman.effort_noise_std`` through the inverse inertia) is added per joint.
        torque_acceleration_warmup: belief updates before the model is trusted (an
            unidentified payload or armature makes the acceleration wrong).
    """

    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    belief: BeliefConfig = field(default_factory=BeliefConfig)
    belief_enabled: bool = True
    latency: float = 0.0
    torque_acceleration: bool = False
    acceleration_noise_std: float = 0.5
    torque_acceleration_warmup: int = 100

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and 0.0 <= self.latency <= 1.0):
            raise ValueError(f"latency must be in [0, 1] s, got {self.latency}")
        if not (math.isfinite(self.acceleration_noise_std) and self.acceleration_noise_std > 0):
            raise ValueError(f"acceleration_noise_std must be > 0, got {self.acceleration_noise_std}")
        if self.torque_acceleration and not self.belief_enabled:
            raise ValueError("torque_acceleration needs belief_enabled (the model uses the identified friction)")
        if self.torque_acceleration_warmup < 0:
            raise ValueError(f"torque_acceleration_warmup must be >= 0, got {self.torque_acceleration_warmup}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EstimatorConfig:
        """From a nested (``{"kalman": {...}}``) or dotted (``{"kalman.jerk_psd": ...}``) mapping."""
        nested: dict[str, Any] = {}
        for key, value in data.items():
            if "." in key:
                section, name = key.split(".", 1)
                nested.setdefault(section, {})[name] = value
            else:
                nested[key] = value
        allowed = {"kalman", "belief", "belief_enabled", "latency", "torque_acceleration", "acceleration_noise_std",
                   "torque_acceleration_warmup"}
        bad = set(nested) - allowed
        if bad:
            raise ValueError(f"estimator: unknown key(s) {sorted(bad)} (allowed: {sorted(allowed)})")
        kwargs: dict[str, Any] = {}
        if "kalman" in nested:
            kwargs["kalman"] = KalmanConfig.from_dict(nested["kalman"])
        if "belief" in nested:
            kwargs["belief"] = BeliefConfig.from_dict(nested["belief"])
        if "belief_enabled" in nested:
            kwargs["belief_enabled"] = bool(nested["belief_enabled"])
        for key in ("latency", "acceleration_noise_std"):
            if key in nested:
                kwargs[key] = float(nested[key])
        if "torque_acceleration_warmup" in nested:
            kwargs["torque_acceleration_warmup"] = int(nested["torque_acceleration_warmup"])
        if "torque_acceleration" in nested:
            kwargs["torque_acceleration"] = bool(nested["torque_acceleration"])
        return cls(**kwargs)


@dataclass(frozen=True)
class Estimate:
    """Filtered joint state at time ``stamp`` (robot order)."""

    stamp: float
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    effort: np.ndarray
    covariance: np.ndarray  # (n, 3, 3) over [q, dq, ddq] per joint
    effort_variance: np.ndarray

    @property
    def position_std(self) -> np.ndarray:
        return np.sqrt(self.covariance[:, 0, 0])

    @property
    def velocity_std(self) -> np.ndarray:
        return np.sqrt(self.covariance[:, 1, 1])


def covariance_vector(est: Estimate) -> np.ndarray:
    """The ``n x 5`` covariance layout (see the module docstring), flattened row-major."""
    P = est.covariance
    return np.stack([P[:, 0, 0], P[:, 0, 1], P[:, 1, 1], P[:, 2, 2], est.effort_variance], axis=1).ravel()


class StateEstimator:
    """Filter joint samples and learn friction/payload online.

    Args:
        robot: robot model (default: the package's Panda).
        config: see :class:`EstimatorConfig`.
        dynamics: nominal inverse dynamics for the belief (built from ``robot`` when needed).
    """

    def __init__(self, robot: RobotModel | None = None, config: EstimatorConfig | None = None,
                 dynamics: InverseDynamics | None = None) -> None:
        self.robot = robot or load_robot()
        self.config = cfg = config or EstimatorConfig()
        self.n = self.robot.n_joints
        self.kf = JointKalmanFilter(self.n, cfg.kalman)
        self._belief: HiddenParameterBelief | None = None
        if cfg.belief_enabled:
            self._belief = HiddenParameterBelief(dynamics or InverseDynamics(self.robot), cfg.belief)
        self.belief_names = parameter_names(self.robot.joint_names)
        self.samples_skipped_by_belief = 0

    @property
    def initialized(self) -> bool:
        return self.kf.initialized

    @property
    def last_stamp(self) -> float | None:
        return self.kf.t

    def counts(self) -> dict[str, int]:
        """Update outcomes, outliers and belief updates since construction."""
        out = dict(self.kf.counts)
        out["belief_updates"] = self._belief.updates if self._belief else 0
        out["belief_skipped_samples"] = self.samples_skipped_by_belief
        return out

    def reset(self) -> None:
        """Forget the state and the belief (e.g. after swapping the payload)."""
        self.kf.reset()
        if self._belief:
            self._belief.reset()

    def process(self, stamp: float, position: Any, velocity: Any = None, effort: Any = None) -> UpdateResult:
        """Fuse one sample taken at ``stamp`` (s); see :meth:`JointKalmanFilter.update`."""
        res = self.kf.update(stamp, position, velocity, effort)
        if self._belief is None:
            return res
        if res.outcome in ("restart", "gap_reset"):
            self._belief.clear_buffer()
        if res.outcome in ("initialized", "restart", "gap_reset", "accepted"):
            if velocity is None or effort is None or res.rejected.any() or res.effort_rejected.any():
                self.samples_skipped_by_belief += 1
            else:
                self._belief.push(float(stamp), np.asarray(position, float), np.asarray(velocity, float),
                                  np.asarray(effort, float))
        if self.config.torque_acceleration and res.outcome == "accepted" and effort is not None \
                and not res.effort_rejected.any():
            self._fuse_torque_acceleration(np.asarray(effort, float))
        return res

    def _fuse_torque_acceleration(self, effort: np.ndarray) -> None:
        b = self._belief.state()
        if b.updates < self.config.torque_acceleration_warmup:
            return
        ddq, gain = self._belief.dynamics.acceleration(
            self.kf.x[:, 0], self.kf.x[:, 1], effort, b.viscous, b.coulomb, b.payload, np.maximum(b.armature, 0.0),
            self.config.belief.min_speed)
        std = np.hypot(self.config.acceleration_noise_std, self.config.kalman.effort_noise_std * gain)
        if np.all(np.isfinite(ddq)):
            self.kf.fuse_acceleration(ddq, std)

    def estimate(self, t: float | None = None) -> Estimate:
        """The state at time ``t`` (default: newest sample + ``config.latency``).

        Raises:
            RuntimeError: no sample yet.
        """
        if not self.kf.initialized:
            raise RuntimeError("the estimator has no sample yet")
        if t is None:
            t = self.kf.t + self.config.latency
        t = max(float(t), self.kf.t)
        x, P, tau, tau_var = self.kf.predict(t)
        bias = self.config.kalman.position_bias_std
        if bias:
            P[:, 0, 0] += bias * bias  # predict() returns a copy
        return Estimate(t, x[:, 0], x[:, 1], x[:, 2], tau, P, tau_var)

    def belief(self) -> BeliefState | None:
        """The current hidden-parameter belief (``None`` when disabled)."""
        return self._belief.state() if self._belief else None
