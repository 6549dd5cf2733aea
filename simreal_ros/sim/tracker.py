"""An object tracker as a lab has one (motion capture, AprilTags): samples at its own rate,
with noise, latency and dropped samples (ROS-free).

The sim bridge publishes what it returns as ``geometry_msgs/PoseStamped`` (stamped at
acquisition, like the joint states); the push env builds observations from it. Ground truth
never reaches a controller.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np


class TrackedPose(NamedTuple):
    stamp: float  # time the sample was taken (s)
    position: np.ndarray  # (3,) m, base frame
    orientation: np.ndarray  # (4,) quaternion w, x, y, z


class ObjectTracker:
    """Noisy, late, lossy samples of an object's pose.

    Args:
        rate_hz: sampling rate. noise_std: white noise per position axis (m).
        latency: delay between taking a sample and its arrival (s). drop_probability: per sample.
        rng: the generator of every random draw (passed in, never global).
    """

    def __init__(self, rate_hz: float, noise_std: float, latency: float, drop_probability: float,
                 rng: np.random.Generator) -> None:
        if not rate_hz > 0 or noise_std < 0 or latency < 0 or not 0 <= drop_probability < 1:
            raise ValueError(f"tracker: need rate > 0, noise >= 0, latency >= 0, 0 <= drop < 1; got {rate_hz}, "
                             f"{noise_std}, {latency}, {drop_probability}")
        self.period = 1.0 / rate_hz
        self.noise_std, self.latency, self.drop_probability = noise_std, latency, drop_probability
        self.rng = rng
        self._pending: deque[TrackedPose] = deque()
        self._next = 0.0
        self.dropped = 0

    def reset(self, t: float) -> None:
        self._pending.clear()
        self._next = t
        self.dropped = 0

    def due(self, t: float) -> bool:
        """A sample is due at time ``t``."""
        return t + 1e-12 >= self._next

    def sample(self, t: float, position: np.ndarray, orientation: np.ndarray) -> None:
        """Take the sample due at ``t`` from the true pose."""
        self._next += self.period * max(1.0, np.floor((t + 1e-12 - self._next) / self.period) + 1.0)
        if self.drop_probability > 0 and self.rng.random() < self.drop_probability:
            self.dropped += 1
            return
        p = np.array(position, dtype=float)
        if self.noise_std > 0:
            p += self.noise_std * self.rng.standard_normal(3)
        self._pending.append(TrackedPose(float(t), p, np.array(orientation, dtype=float)))

    def pop(self, t: float) -> list[TrackedPose]:
        """Samples that have arrived by ``t``, oldest first."""
        out = []
        while self._pending and self._pending[0].stamp + self.latency <= t + 1e-12:
            out.append(self._pending.popleft())
        return out
