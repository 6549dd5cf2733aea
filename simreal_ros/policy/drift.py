"""Drift monitors while a policy drives: is the run moving away from what the policy was trained on?

Where the OOD monitor (:mod:`simreal_ros.policy.ood`) judges single observations, these judge
*distributions* over a sliding window of ``window`` commanded cycles, and the task's progress:

- **observation drift**: the largest ``|window mean - training mean| / training std`` over the
  observation's values (the manifest's ``observation.normalization`` statistics). A biased
  joint-position estimate, a shifted workspace or a different goal distribution moves the
  window mean while each single observation may still look plausible.
- **action drift**: the same for the policy's (clipped) actions against the training action
  statistics (``provenance.action_statistics: {mean, std}``, recorded at export by
  :func:`simreal_ros.training.action_stats.record_action_statistics`); a bundle without them
  has no action drift monitor (said in the report). A policy pinned at its action bound, or
  pushing steadily one way, drifts here.
- **progress**: the distance to the goal (``goal_delta``, or ``object_to_goal`` for the push
  task, from the observation) has not improved by ``progress_min_decrease`` within the last
  ``progress_window`` commanded cycles while still farther than ``progress_tolerance``: the
  policy is commanded but gets nowhere (an unreachable goal, a blocked arm).

A distribution score above its threshold on ``min_count`` consecutive cycles (window full) is
sustained drift; a stalled progress is sustained by construction. The alarm's rising edge
carries a one-line reason (which monitor, the score, the worst term); it clears once no monitor
is over its threshold (the distribution scores below 80 % of theirs). :meth:`DriftMonitor.reset`
(a new goal, a restart) empties the windows. No ROS imports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

#: observation terms whose norm is the distance to the goal, in order of preference
PROGRESS_TERMS = ("goal_delta", "object_to_goal")
#: the distribution alarms clear below this fraction of their threshold
CLEAR_FRACTION = 0.8


def action_statistics(provenance: Mapping[str, Any], action_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, std)`` from ``provenance.action_statistics`` if present and well-formed, else ``None``."""
    stats = provenance.get("action_statistics") if isinstance(provenance, Mapping) else None
    if not isinstance(stats, Mapping):
        return None
    try:
        mean = np.asarray(stats.get("mean"), dtype=float)
        std = np.asarray(stats.get("std"), dtype=float)
    except (TypeError, ValueError):
        return None
    if mean.shape != (action_dim,) or std.shape != (action_dim,) or not (np.all(np.isfinite(mean))
                                                                         and np.all(np.isfinite(std))
                                                                         and np.all(std > 0)):
        return None
    return mean, std


class _WindowMean:
    """Mean of the last ``n`` vectors (running sum; re-summed every ``n`` updates against rounding)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf: deque[np.ndarray] = deque(maxlen=n)
        self.sum: np.ndarray | None = None
        self._since = 0

    def clear(self) -> None:
        self.buf.clear()
        self.sum = None
        self._since = 0

    def add(self, x: np.ndarray) -> None:
        if len(self.buf) == self.n:
            self.sum = self.sum - self.buf[0]
        self.buf.append(x)
        self.sum = x.copy() if self.sum is None else self.sum + x
        self._since += 1
        if self._since >= self.n:
            self.sum = np.sum(np.asarray(self.buf), axis=0)
            self._since = 0

    @property
    def full(self) -> bool:
        return len(self.buf) == self.n

    def mean(self) -> np.ndarray:
        return self.sum / len(self.buf)


@dataclass
class DriftReport:
    """Result of one :meth:`DriftMonitor.update`."""

    obs_score: float | None  # None until the window is full
    obs_worst: str
    action_score: float | None  # None until full, or without action statistics
    distance: float | None  # progress distance this cycle (None: no progress term)
    progress_stalled: bool
    sustained: bool
    raised: bool
    reason: str = ""  # set on the rising edge
    monitors_over: list[str] = field(default_factory=list)

    def values(self) -> dict[str, float | int | str]:
        """For /diagnostics."""
        out: dict[str, float | int | str] = {"drift_sustained": int(self.sustained),
                                             "drift_progress_stalled": int(self.progress_stalled)}
        if self.obs_score is not None:
            out.update(drift_obs_score=self.obs_score, drift_obs_worst=self.obs_worst)
        if self.action_score is not None:
            out["drift_action_score"] = self.action_score
        if self.distance is not None:
            out["drift_progress_distance_m"] = self.distance
        return out


class DriftMonitor:
    """Sliding-window drift monitor (see the module docstring).

    Args:
        term_slices: observation term -> slice. obs_mean/obs_std: training statistics.
        action_stats: ``(mean, std)`` of training actions or ``None`` (no action monitor).
        window: cycles in the distribution windows. obs_threshold/action_threshold: scores
            above which a cycle drifts. min_count: consecutive drifting cycles that raise the alarm.
        progress_window: commanded cycles within which the distance must improve by
            ``progress_min_decrease`` (m) unless within ``progress_tolerance`` (m); 0 disables.
    """

    def __init__(self, term_slices: Mapping[str, slice], obs_mean: np.ndarray, obs_std: np.ndarray,
                 action_stats: tuple[np.ndarray, np.ndarray] | None = None, *, window: int = 40,
                 obs_threshold: float = 5.0, action_threshold: float = 3.0, min_count: int = 20,
                 progress_window: int = 80, progress_min_decrease: float = 0.005,
                 progress_tolerance: float = 0.03) -> None:
        if window < 1 or min_count < 1 or progress_window < 0:
            raise ValueError(f"drift window ({window}) and min_count ({min_count}) must be >= 1, progress_window "
                             f"({progress_window}) >= 0")
        if not (obs_threshold > 0 and action_threshold > 0 and progress_min_decrease >= 0 and progress_tolerance >= 0):
            raise ValueError("drift thresholds must be > 0, progress decrease and tolerance >= 0")
        self.slices = dict(term_slices)
        self.names = np.empty(len(np.asarray(obs_mean)), dtype=object)
        for name, s in self.slices.items():
            self.names[s] = name
        self.obs_mean = np.asarray(obs_mean, dtype=float)
        self.obs_inv_std = 1.0 / np.asarray(obs_std, dtype=float)
        self.action_stats = None if action_stats is None else (np.asarray(action_stats[0], dtype=float),
                                                               1.0 / np.asarray(action_stats[1], dtype=float))
        self.window, self.min_count = int(window), int(min_count)
        self.obs_threshold, self.action_threshold = float(obs_threshold), float(action_threshold)
        self.progress_window = int(progress_window)
        self.progress_min_decrease, self.progress_tolerance = float(progress_min_decrease), float(progress_tolerance)
        self.progress_slice = next((self.slices[t] for t in PROGRESS_TERMS if t in self.slices), None)
        self._obs = _WindowMean(self.window)
        self._act = _WindowMean(self.window)
        self._mins: deque[float] = deque(maxlen=self.progress_window + 1)
        self._best = np.inf
        self._run = 0  # consecutive cycles with a distribution score over its threshold
        self.sustained = False
        self.alarms = 0
        self.last: DriftReport | None = None
        self.last_reason = ""  # the latest alarm's reason

    def reset(self) -> None:
        """Empty the windows and the progress history (a new goal); keeps the alarm count."""
        self._obs.clear()
        self._act.clear()
        self._mins.clear()
        self._best = np.inf
        self._run = 0
        self.sustained = False

    def update(self, obs: np.ndarray, action: np.ndarray | None) -> DriftReport:
        """Advance by one commanded cycle's raw observation and clipped action."""
        obs = np.asarray(obs, dtype=float)
        self._obs.add(obs)
        obs_score, worst = None, ""
        if self._obs.full:
            z = np.abs((self._obs.mean() - self.obs_mean) * self.obs_inv_std)
            z = np.where(np.isfinite(z), z, np.inf)
            i = int(np.argmax(z))
            obs_score, worst = float(z[i]), str(self.names[i])
        action_score = None
        if self.action_stats is not None and action is not None:
            self._act.add(np.asarray(action, dtype=float))
            if self._act.full:
                za = np.abs((self._act.mean() - self.action_stats[0]) * self.action_stats[1])
                action_score = float(np.max(np.where(np.isfinite(za), za, np.inf)))
        distance, stalled = None, False
        if self.progress_slice is not None:
            distance = float(np.linalg.norm(obs[self.progress_slice]))
            if self.progress_window > 0 and np.isfinite(distance):
                self._best = min(self._best, distance)
                self._mins.append(self._best)
                stalled = (len(self._mins) == self._mins.maxlen and distance > self.progress_tolerance
                           and self._mins[0] - self._mins[-1] < self.progress_min_decrease)
        over = []
        if obs_score is not None and obs_score > self.obs_threshold:
            over.append("observation")
        if action_score is not None and action_score > self.action_threshold:
            over.append("action")
        self._run = self._run + 1 if over else 0
        clear = ((obs_score is None or obs_score <= CLEAR_FRACTION * self.obs_threshold)
                 and (action_score is None or action_score <= CLEAR_FRACTION * self.action_threshold))
        raised = False
        reason = ""
        if not self.sustained and (self._run >= self.min_count or stalled):
            self.sustained = raised = True
            self.alarms += 1
            parts = []
            if "observation" in over and self._run >= self.min_count:
                parts.append(f"observation window mean {obs_score:.1f} training std from the training mean (term "
                             f"'{worst}', threshold {self.obs_threshold:g}, {self._run} cycles)")
            if "action" in over and self._run >= self.min_count:
                parts.append(f"action window mean {action_score:.1f} training std from the training mean "
                             f"(threshold {self.action_threshold:g}, {self._run} cycles)")
            if stalled:
                parts.append(f"no progress: distance to the goal {distance:.3f} m has not improved by "
                             f"{self.progress_min_decrease:g} m in {self.progress_window} commanded cycles")
            reason = self.last_reason = "; ".join(parts)
        elif self.sustained and not stalled and not over and clear:
            self.sustained = False
        self.last = DriftReport(obs_score, worst, action_score, distance, stalled, self.sustained, raised, reason,
                                over + (["progress"] if stalled else []))
        return self.last
