"""Excitation trajectories for identifying friction and payload (ROS-free).

A finite Fourier series per joint around a centre pose (the classic identification
trajectory of Swevers et al.): ``q_i(t) = c_i + s(t) * sum_k a_ik sin(k w t + phi_ik)`` with
a smooth start envelope ``s``. Amplitudes are scaled so that position, velocity and
acceleration stay within a fraction of the robot's own limits (from :class:`RobotModel`,
nothing typed here), and frequencies/phases differ between joints so that velocities
change sign at different times and cover many speeds (which separates viscous from
Coulomb friction) while the configuration moves (which exposes the payload through gravity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.settings import setting, validate_fields


@dataclass(frozen=True)
class ExcitationConfig:
    """Shape of the excitation (each field declares its bounds and meaning once)."""

    base_frequency: float = setting(0.2, "fundamental frequency; harmonics are multiples of it", unit="Hz",
                                    low=0.0, low_open=True, high=5.0)
    harmonics: int = setting(3, "number of harmonics per joint", low=1, high=10)
    amplitude: float = setting(0.35, "largest position excursion per joint before limit scaling", unit="rad",
                               low=0.0, low_open=True, high=2.0)
    limit_fraction: float = setting(0.4, "fraction of the position/velocity/acceleration limits never exceeded",
                                    low=0.0, low_open=True, high=1.0)
    ramp: float = setting(1.0, "duration of the smooth start (and of the smooth end when duration > 0)", unit="s",
                          low=0.0, high=60.0)
    duration: float = setting(0.0, "length of the excitation; it ends smoothly at rest at the centre (0: endless)",
                              unit="s", low=0.0, high=86400.0)

    def __post_init__(self) -> None:
        validate_fields(self)
        if 0 < self.duration < 2 * self.ramp:
            raise ValueError(f"ExcitationConfig duration {self.duration:g} s must be 0 (endless) or at least two "
                             f"ramps (2 x {self.ramp:g} s): it starts and ends smoothly")


class ExcitationTrajectory:
    """Position/velocity/acceleration of the excitation at any time ``t >= 0``.

    Args:
        robot: robot model (limits and ready pose).
        config: see :class:`ExcitationConfig`.
        center: centre pose (default: the robot's ready pose).
        seed: seed of the phases and amplitude mix (same seed, same trajectory).
        joints: mask of joints to excite (default: all).
    """

    def __init__(self, robot: RobotModel, config: ExcitationConfig | None = None, center: np.ndarray | None = None,
                 seed: int = 0, joints: np.ndarray | None = None) -> None:
        self.config = cfg = config or ExcitationConfig()
        n = robot.n_joints
        self.center = np.array(robot.ready_pose if center is None else center, dtype=float)
        if self.center.shape != (n,):
            raise ValueError(f"center must have {n} values, got shape {self.center.shape}")
        rng = np.random.default_rng(seed)
        k = np.arange(1, int(cfg.harmonics) + 1, dtype=float)
        # Joint-specific detuning so that joints never move in lock-step.
        self.omega = 2 * np.pi * cfg.base_frequency * (1.0 + 0.13 * np.arange(n))[:, None] * k[None, :]
        self.phase = rng.uniform(0, 2 * np.pi, (n, k.size))
        weights = rng.uniform(0.5, 1.0, (n, k.size)) / k[None, :]
        amp = cfg.amplitude * weights / weights.sum(axis=1, keepdims=True)
        lim = robot.limits
        f = cfg.limit_fraction
        room = np.minimum(self.center - lim.position_min, lim.position_max - self.center)
        if np.any(room <= 0):
            raise ValueError(f"center {self.center} is not inside the position limits")
        scale = np.minimum.reduce([
            np.ones(n),
            f * room / amp.sum(axis=1),
            f * lim.velocity / (amp * self.omega).sum(axis=1),
            f * lim.acceleration / (amp * self.omega**2).sum(axis=1),
        ])
        mask = np.ones(n, bool) if joints is None else np.asarray(joints, bool)
        self.amp = amp * (scale * mask)[:, None]

    @staticmethod
    def _smoothstep(x: float, T: float) -> tuple[float, float, float]:
        """Quintic smoothstep of ``x / T`` from 0 to 1 and its first two derivatives in ``x``."""
        if x >= T:
            return 1.0, 0.0, 0.0
        if x <= 0:
            return 0.0, 0.0, 0.0
        u = x / T
        return (10 * u**3 - 15 * u**4 + 6 * u**5, (30 * u**2 - 60 * u**3 + 30 * u**4) / T,
                (60 * u - 180 * u**2 + 120 * u**3) / T**2)

    def _envelope(self, t: float) -> tuple[float, float, float]:
        """Smooth start over the ramp (and, with a duration, smooth end over the last ramp) and its
        first two derivatives."""
        cfg = self.config
        s, ds, dds = self._smoothstep(t, cfg.ramp)
        if cfg.duration <= 0:
            return s, ds, dds
        if t >= cfg.duration:
            return 0.0, 0.0, 0.0
        w, dw, ddw = self._smoothstep(cfg.duration - t, cfg.ramp)  # d/dt = -d/dx
        return s * w, ds * w - s * dw, dds * w - 2 * ds * dw + s * ddw

    def __call__(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, dq, ddq) at time ``t`` (s)."""
        arg = self.omega * t + self.phase
        sin, cos = np.sin(arg), np.cos(arg)
        f = (self.amp * sin).sum(axis=1)
        df = (self.amp * self.omega * cos).sum(axis=1)
        ddf = -(self.amp * self.omega**2 * sin).sum(axis=1)
        s, ds, dds = self._envelope(t)
        return self.center + s * f, ds * f + s * df, dds * f + 2 * ds * df + s * ddf


@dataclass(frozen=True)
class ExcitationRunConfig:
    """How the excitation controller runs the trajectory (each field declared once)."""

    rate_hz: float = setting(50.0, "proposal rate; the calibrate graph runs the shield at this rate", unit="Hz",
                             low=1.0, high=1000.0)
    seed: int = setting(0, "seed of the excitation's phases and amplitude mix", low=0, high=2**31 - 1)
    min_approach: float = setting(1.0, "shortest smooth approach from the measured pose to the centre", unit="s",
                                  low=0.0, high=60.0)

    def __post_init__(self) -> None:
        validate_fields(self)


class ExcitationRun:
    """The excitation as a controller runs it, from wherever the arm is: a smooth (quintic,
    rest-to-rest) approach from the measured pose ``q_start`` to the centre within
    ``limit_fraction`` of the velocity, acceleration and jerk limits, then the
    :class:`ExcitationTrajectory` for its ``duration``, then holding at the centre, at rest.

    Time ``t`` counts from the start of the approach. No jump: ``self(0)`` is ``q_start`` at rest.
    """

    def __init__(self, robot: RobotModel, q_start: np.ndarray, config: ExcitationConfig | None = None,
                 run: ExcitationRunConfig | None = None) -> None:
        self.run_config = run or ExcitationRunConfig()
        self.trajectory = ExcitationTrajectory(robot, config, seed=self.run_config.seed)
        cfg = self.trajectory.config
        self.q_start = np.array(q_start, dtype=float)
        if self.q_start.shape != (robot.n_joints,) or not np.all(np.isfinite(self.q_start)):
            raise ValueError(f"q_start must be {robot.n_joints} finite joint positions, got {q_start!r}")
        lim, f = robot.limits, cfg.limit_fraction
        self.delta = self.trajectory.center - self.q_start
        d = np.abs(self.delta)
        # a quintic rest-to-rest move of d in T peaks at 1.875 d/T, 5.774 d/T^2 and 60 d/T^3
        self.approach_time = float(max(self.run_config.min_approach, np.max(np.concatenate([
            1.875 * d / (f * lim.velocity), np.sqrt(5.774 * d / (f * lim.acceleration)),
            np.cbrt(60.0 * d / (f * lim.jerk))]))))
        self.end_time = self.approach_time + cfg.duration if cfg.duration > 0 else float("inf")

    def phase(self, t: float) -> str:
        """``approach``, ``excite`` or ``finished`` (holding at the centre)."""
        if t < self.approach_time:
            return "approach"
        return "finished" if t >= self.end_time else "excite"

    def finished(self, t: float) -> bool:
        return t >= self.end_time

    def __call__(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, dq, ddq) at time ``t`` (s) since the start of the approach."""
        if t < self.approach_time:
            s, ds, dds = ExcitationTrajectory._smoothstep(max(t, 0.0), self.approach_time)
            return self.q_start + s * self.delta, ds * self.delta, dds * self.delta
        return self.trajectory(min(t, self.end_time) - self.approach_time)
