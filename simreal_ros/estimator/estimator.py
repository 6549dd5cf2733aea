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

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from simreal_ros.configs import from_mapping as config_from_mapping
from simreal_ros.estimator.belief import BeliefConfig, BeliefState, HiddenParameterBelief, parameter_names
from simreal_ros.estimator.dynamics import InverseDynamics
from simreal_ros.estimator.kalman import JointKalmanFilter, KalmanConfig, UpdateResult
from simreal_ros.robot import RobotModel, load_robot
from simreal_ros.settings import Setting, SettingError, setting, settings_of, validate_fields

#: Column labels of the covariance layout.
COVARIANCE_FIELDS = ("var_position", "cov_position_velocity", "var_velocity", "var_acceleration", "var_effort")


@dataclass(frozen=True)
class EstimatorConfig:
    """Settings of :class:`StateEstimator`; each field declares its bounds and meaning once.

    ``kalman`` (filter noise model and robustness) and ``belief`` (hidden-parameter
    estimation) are sections; :func:`estimator_settings` lists every setting with the
    section as a dotted prefix (``kalman.max_gap``), as the node's parameters are named.
    ``publish_rate_hz`` and ``belief_rate_hz`` are the output rates of the node.
    """

    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    belief: BeliefConfig = field(default_factory=BeliefConfig)
    belief_enabled: bool = setting(True, "estimate friction, payload and armature online (an inverse-dynamics pair "
                                   "per update)")
    latency: float = setting(0.0, "known delay between acquisition and use: estimates are predicted this far "
                             "beyond the newest sample", unit="s", low=0.0, high=1.0)
    torque_acceleration: bool = setting(False, "also fuse the acceleration the measured effort produces through the "
                                        "identified model (needs belief_enabled; about 2x the cost per sample)")
    acceleration_noise_std: float = setting(0.5, "model error of that acceleration (the effort noise through the "
                                            "inverse inertia is added per joint)", unit="rad/s^2", low=1e-6,
                                            high=1e4)
    torque_acceleration_warmup: int = setting(100, "belief updates before the model's acceleration is used (an "
                                              "unidentified payload or armature makes it wrong)", low=0, high=1000000)
    publish_rate_hz: float = setting(0.0, "estimate rate; 0 = one estimate per input sample, else a timer at this "
                                     "rate predicting to its time", unit="Hz", low=0.0, high=10000.0)
    max_estimate_rate_hz: float = setting(0.0, "input-rate mode (publish_rate_hz 0): most estimates per second of "
                                          "sample time; every sample is filtered, a sample arriving before the next "
                                          "estimate is due is not published (for a 1 kHz driver: the filter step is "
                                          "cheap, two messages per sample are not); 0 = every sample", unit="Hz",
                                          low=0.0, high=10000.0)
    belief_rate_hz: float = setting(10.0, "belief publications per second of sample time (the prior too); 0 = at "
                                    "every belief update", unit="Hz", low=0.0, high=10000.0)
    covariance_rate_hz: float = setting(50.0, "covariance publications per second of sample time, each with an "
                                        "estimate (the covariance changes slowly and only bags read it); 0 = with "
                                        "every estimate", unit="Hz", low=0.0, high=10000.0)

    def __post_init__(self) -> None:
        validate_fields(self)
        for name, cls in (("kalman", KalmanConfig), ("belief", BeliefConfig)):
            if not isinstance(getattr(self, name), cls):
                raise SettingError(f"EstimatorConfig '{name}' = {getattr(self, name)!r}: not a {cls.__name__}")
        if self.torque_acceleration and not self.belief_enabled:
            raise SettingError("EstimatorConfig 'torque_acceleration' = True: torque_acceleration needs "
                               "belief_enabled (the model uses the identified friction)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EstimatorConfig:
        """From a nested (``{"kalman": {...}}``) or dotted (``{"kalman.jerk_psd": ...}``) mapping;
        unknown keys are refused by name."""
        nested: dict[str, Any] = {}
        for key, value in data.items():
            if "." in key:
                section, name = key.split(".", 1)
                nested.setdefault(section, {})[name] = value
            else:
                nested[key] = value
        kwargs: dict[str, Any] = {k: v for k, v in nested.items() if k not in _SECTIONS}
        for section, sub in _SECTIONS.items():
            if section in nested:
                if not isinstance(nested[section], Mapping):
                    raise SettingError(f"estimator: '{section}' = {nested[section]!r}: not a mapping")
                kwargs[section] = sub.from_dict(nested[section])
        return config_from_mapping(cls, kwargs, "estimator")


_SECTIONS = {"kalman": KalmanConfig, "belief": BeliefConfig}


def estimator_settings() -> list[Setting]:
    """Every setting of :class:`EstimatorConfig`, sections as dotted prefixes (the node's parameters)."""
    out = list(settings_of(EstimatorConfig))
    for section, sub in _SECTIONS.items():
        out += [replace(s, name=f"{section}.{s.name}") for s in settings_of(sub)]
    return out


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
