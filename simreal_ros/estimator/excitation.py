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
    ramp: float = setting(1.0, "duration of the smooth start", unit="s", low=0.0, high=60.0)

    def __post_init__(self) -> None:
        validate_fields(self)


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

    def _envelope(self, t: float) -> tuple[float, float, float]:
        """Smoothstep (quintic) from 0 to 1 over the ramp and its first two derivatives."""
        T = self.config.ramp
        if t >= T:
            return 1.0, 0.0, 0.0
        if t <= 0:
            return 0.0, 0.0, 0.0
        x = t / T
        s = 10 * x**3 - 15 * x**4 + 6 * x**5
        ds = (30 * x**2 - 60 * x**3 + 30 * x**4) / T
        dds = (60 * x - 180 * x**2 + 120 * x**3) / T**2
        return s, ds, dds

    def __call__(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, dq, ddq) at time ``t`` (s)."""
        arg = self.omega * t + self.phase
        sin, cos = np.sin(arg), np.cos(arg)
        f = (self.amp * sin).sum(axis=1)
        df = (self.amp * self.omega * cos).sum(axis=1)
        ddf = -(self.amp * self.omega**2 * sin).sum(axis=1)
        s, ds, dds = self._envelope(t)
        return self.center + s * f, ds * f + s * df, dds * f + 2 * ds * df + s * ddf
