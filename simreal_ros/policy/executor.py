"""Policy executor core (ROS-free): state + goal (+ object pose) -> observation -> model -> joint command.

One :meth:`PolicyExecutor.step` per control period, called by the ROS node's timer or by an
offline evaluation loop. Every cycle measures the age of the state it uses and its own
compute time; a stale state, a missing input, a non-finite result or a missed compute
deadline *skips* the cycle (``command is None``) and is counted by reason -- nothing is
extrapolated. The OOD monitor scores every observation against the training statistics and
asks for a revert when excursions are sustained; the drift monitors
(:mod:`simreal_ros.policy.drift`: observation and action windows against the training
statistics, progress towards the goal) ask for one when drift is sustained.

Usage (offline)::

    ex = PolicyExecutor(load_bundle(path, robot), robot)
    ex.set_goal(goal)
    for t in ...:
        ex.update_state(q_measured, dq_measured, stamp)
        ex.update_object(p_tracked, stamp_tracked)     # bundles whose terms need the object pose
        res = ex.step(t)
        if res.command is not None: ...

:attr:`PolicyExecutor.inputs` names what the bundle's observation terms need
(:data:`~simreal_ros.policy.observation.TERM_INPUTS`); the node subscribes to exactly those.
A ``tool_planar_delta`` bundle keeps its tool reference point between cycles
(:class:`~simreal_ros.robot.planar.PlanarReference`), exactly as the push env does in training.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from simreal_ros.policy.action import action_to_command, limit_change
from simreal_ros.policy.bundle import PolicyBundle, check_robot
from simreal_ros.policy.drift import DriftMonitor, DriftReport, action_statistics
from simreal_ros.policy.observation import ObsInputs, build_observation, one_hot, required_inputs
from simreal_ros.policy.ood import OodMonitor, OodReport
from simreal_ros.robot import RobotModel
from simreal_ros.settings import SettingError, setting, validate_fields

#: reasons a cycle is skipped (keys of :attr:`PolicyExecutor.skipped`)
SKIP_REASONS = ("no_state", "no_goal", "stale_state", "no_object", "stale_object", "non_finite_action",
                "deadline_missed", "no_latent")
#: what starts a cycle (:attr:`ExecutorConfig.trigger`)
TRIGGERS = ("estimate", "timer")


@dataclass
class ExecutorConfig:
    """Timing and monitoring settings (each field declares its bounds and meaning once; the
    node's parameters derive from them). The OOD settings are those of
    :class:`~simreal_ros.policy.ood.OodMonitor`.

    ``compute_deadline`` is not a setting: an absolute override for offline tools (``None``:
    ``deadline_fraction`` of a control period).
    """

    max_state_age: float = setting(0.05, "an older state skips the cycle (never extrapolated)", unit="s",
                                   low=0.001, high=1.0)
    max_object_age: float = setting(0.1, "an older tracked object pose skips the cycle (bundles that observe an "
                                    "object)", unit="s", low=0.001, high=1.0)
    deadline_fraction: float = setting(0.5, "compute deadline as a fraction of the control period (manifest rate); "
                                       "slower skips the cycle", low=0.01, high=1.0)
    ood_threshold: float = setting(8.0, "z-score against the manifest's normalization statistics above which an "
                                   "observation term is out of distribution", low=0.5, high=1000.0)
    ood_window: int = setting(10, "cycles in the OOD window", low=1, high=10000)
    ood_min_count: int = setting(5, "excursions within the window that raise the OOD alarm (<= ood_window)",
                                 low=1, high=10000)
    ood_revert: bool = setting(True, "request the shield's revert when an OOD alarm is raised")
    drift_window: int = setting(40, "cycles in the drift monitors' sliding windows of observations and actions "
                                "(simreal_ros.policy.drift)", low=1, high=100000)
    drift_obs_threshold: float = setting(8.0, "observation drift: window mean this many training std from the "
                                         "training mean (largest over the observation's values)", low=0.1,
                                         high=1000.0)
    drift_action_threshold: float = setting(3.5, "action drift: window mean this many training std from the "
                                            "training action mean (bundles with provenance.action_statistics)",
                                            low=0.1, high=1000.0)
    drift_min_count: int = setting(20, "consecutive cycles over a drift threshold that raise the drift alarm", low=1,
                                   high=100000)
    progress_window: int = setting(80, "commanded cycles within which the distance to the goal must improve "
                                   "(0: no progress monitor)", low=0, high=100000)
    progress_min_decrease: float = setting(0.005, "improvement of the distance to the goal that counts as progress",
                                           unit="m", low=0.0, high=1.0)
    progress_tolerance: float = setting(0.03, "no progress is needed this close to the goal", unit="m", low=0.0,
                                        high=1.0)
    drift_revert: bool = setting(True, "request the shield's revert when a drift alarm is raised")
    stats_window: int = setting(1000, "cycles kept for the latency/rate percentiles", low=10, high=1000000)
    trigger: str = setting("estimate", "what starts a cycle: estimate (the arrival of a new state, at most at the "
                           "manifest rate, see CycleGate; a timer of the same period steps when none came for 1.5 "
                           "periods, so a silent input is still counted as stale) or timer (a free-running timer "
                           "at the manifest rate: a state waits up to one period for the next tick)",
                           choices=TRIGGERS)
    compute_deadline: float | None = None

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.ood_min_count > self.ood_window:
            raise SettingError(f"ExecutorConfig 'ood_min_count' = {self.ood_min_count}: must not exceed "
                               f"'ood_window' = {self.ood_window}")


class CycleGate:
    """When an input-triggered cycle runs: at most at ``period`` on average, as soon as a new
    input arrives after the cycle is due.

    Cycles are due on a grid of ``period`` (so the mean rate is exact whatever the input rate);
    an input arriving up to ``tolerance`` periods before a due time already runs it (inputs at
    the cycle rate jitter around the grid: without the tolerance an early one would make its
    cycle wait a whole input period), but never sooner than ``(1 - tolerance)`` periods after
    the last cycle: the shield and the arm see steps of about one period (a policy's action is
    a step per period; a cycle right after a late one would be a short, fast step). A cycle due
    more than a period ago restarts the grid at that input (no burst of catch-up cycles after a
    stall)::

        gate = CycleGate(0.05)
        if gate.due(now): res = executor.step(now); gate.ran(now)
    """

    def __init__(self, period: float, tolerance: float = 0.25) -> None:
        if not (period > 0 and 0.0 <= tolerance < 1.0):
            raise ValueError(f"CycleGate: period {period!r} must be > 0 and tolerance {tolerance!r} in [0, 1)")
        self.period, self.tolerance = float(period), float(tolerance)
        self.next_due = -np.inf
        self.last_run = -np.inf

    def due(self, now: float) -> bool:
        early = self.tolerance * self.period
        return now >= self.next_due - early and now - self.last_run >= self.period - early

    def ran(self, now: float) -> None:
        """A cycle ran at ``now`` (input-triggered or the watchdog's)."""
        nxt = self.next_due + self.period
        self.next_due = nxt if abs(now - self.next_due) < self.period else now + self.period
        self.last_run = now

    def overdue(self, now: float, factor: float = 1.5) -> bool:
        """No cycle ran for ``factor`` periods (the watchdog timer's test)."""
        return now - self.last_run >= factor * self.period


@dataclass
class StepResult:
    """Outcome of one cycle. ``command`` is ``None`` when the cycle was skipped (see ``skipped``)."""

    now: float
    command: np.ndarray | None
    command_type: str  # "position" (rad) or "torque" (N m)
    skipped: str | None = None
    action: np.ndarray | None = None  # model output clipped to the manifest's action.clip
    compute_time: float = 0.0  # s, observation + model + action (+ OOD)
    state_age: float | None = None  # s
    ood: OodReport | None = None
    revert_reason: str | None = None  # set when this cycle asks the shield to revert
    observation: np.ndarray | None = field(default=None, repr=False)  # raw (unnormalised)
    raw_action: np.ndarray | None = field(default=None, repr=False)  # the model's output, before the clip
    drift: DriftReport | None = None  # commanded cycles only

    @property
    def ood_score(self) -> float | None:
        """Largest per-term z-score of this cycle's observation (``None`` if none was built)."""
        return None if self.ood is None else self.ood.score


class PolicyExecutor:
    """Runs a loaded bundle against a robot; see the module docstring."""

    def __init__(self, bundle: PolicyBundle, robot: RobotModel, config: ExecutorConfig | None = None) -> None:
        if bundle.backend is None:
            raise ValueError(f"bundle '{bundle.manifest.name}' has no model loaded (load_bundle(load_model=True))")
        check_robot(bundle.manifest, robot)
        self.bundle, self.manifest, self.robot = bundle, bundle.manifest, robot
        self.config = config or ExecutorConfig()
        m = self.manifest
        self.period = 1.0 / m.control_rate_hz
        self.max_state_age = self.config.max_state_age if self.config.max_state_age is not None else self.period
        self.deadline = self.config.compute_deadline if self.config.compute_deadline is not None else self.config.deadline_fraction * self.period
        if not (self.max_state_age > 0 and self.deadline > 0):
            raise ValueError(f"max_state_age ({self.max_state_age}) and compute_deadline ({self.deadline}) must be > 0")
        self.command_type = "torque" if m.action_type == "joint_torque" else "position"
        self.inputs = required_inputs(m.term_names)
        self.planar = None
        if m.action_type == "tool_planar_delta":
            from simreal_ros.robot.planar import PlanarReference

            self.planar = PlanarReference(robot, m.planar_frame(robot), m.action_planar["max_lead"])
        # the latent code is chosen, not observed: the monitors give it no weight (an exploration
        # family runs one code at a time, whose one-hot value is far from the mixture's mean)
        monitor_std = m.obs_std.copy()
        if "latent" in m.term_names:
            monitor_std[m.term_slices()["latent"]] = np.inf
        self.ood = OodMonitor(m.term_slices(), m.obs_mean, monitor_std, self.config.ood_threshold,
                              self.config.ood_window, self.config.ood_min_count)
        c = self.config
        # an exploration family's codes are there to visit states, not to get closer to the goal
        # (Wagenmaker et al.): its progress monitor is off, or the first code that pushes "the
        # wrong way" reverts and latches the session onto the baseline; the distribution monitors
        # and every shield limit stay
        self.progress_window = 0 if "latent" in m.term_names else c.progress_window
        self.drift = DriftMonitor(m.term_slices(), m.obs_mean, monitor_std,
                                  action_statistics(m.provenance, m.action_dim),
                                  window=c.drift_window, obs_threshold=c.drift_obs_threshold,
                                  action_threshold=c.drift_action_threshold, min_count=c.drift_min_count,
                                  progress_window=self.progress_window, progress_min_decrease=c.progress_min_decrease,
                                  progress_tolerance=c.progress_tolerance)
        #: when a list, every commanded cycle's clipped action is appended (action statistics at export)
        self.action_log: list[np.ndarray] | None = None
        self.cycles = 0
        self.commands = 0
        self.skipped: Counter[str] = Counter({r: 0 for r in SKIP_REASONS})
        self.rejected_states = 0
        self.revert_requests = 0
        self.late_cycles = 0
        n = self.config.stats_window
        self._compute: deque[float] = deque(maxlen=n)
        self._ages: deque[float] = deque(maxlen=n)
        self._ticks: deque[float] = deque(maxlen=n)
        self._last_ood: OodReport | None = None
        self._latent_code: np.ndarray | None = None  # set_latent (kept across reset: a choice, not a state)
        self.reset()

    # ------------------------------------------------------------------ inputs
    def reset(self) -> None:
        """Forget state, goal, last action and the OOD window (counters are kept)."""
        self._q = self._dq = self._goal = None
        self._stamp = None
        self._object = self._object_stamp = None
        self._last_action = np.zeros(self.manifest.action_dim)
        if self.planar is not None:
            self.planar.reset()
        self.ood.reset()
        self.drift.reset()

    def update_state(self, q, dq, stamp: float) -> bool:
        """Latest measured/estimated joint state (robot order). Non-finite input is rejected (counted)."""
        q = np.asarray(q, dtype=float)
        dq = np.asarray(dq, dtype=float)
        n = self.manifest.n_joints
        if q.shape != (n,) or dq.shape != (n,):
            raise ValueError(f"state must have {n} positions and velocities, got shapes {q.shape} and {dq.shape}")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq)) and np.isfinite(stamp)):
            self.rejected_states += 1
            return False
        self._q, self._dq, self._stamp = q, dq, float(stamp)
        return True

    def set_goal(self, p) -> None:
        """Goal position of the flange in the base frame (m)."""
        p = np.asarray(p, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"goal must be 3 finite values (x, y, z in m), got {p!r}")
        if self._goal is not None and not np.array_equal(p, self._goal):
            self.drift.reset()  # a new goal: progress and windows start over
        self._goal = p

    def update_object(self, position, stamp: float) -> bool:
        """Latest tracked object position (m, base frame) stamped at acquisition. Non-finite input is
        rejected (counted with the states)."""
        p = np.asarray(position, dtype=float)
        if p.shape != (3,):
            raise ValueError(f"object position must be 3 values (x, y, z in m), got shape {p.shape}")
        if not (np.all(np.isfinite(p)) and np.isfinite(stamp)):
            self.rejected_states += 1
            return False
        self._object, self._object_stamp = p, float(stamp)
        return True

    @property
    def latent_size(self) -> int | None:
        """Size of the bundle's ``latent`` term (an exploration family's number of codes), or ``None``."""
        return dict(self.manifest.obs_terms).get("latent")

    @property
    def latent(self) -> int | None:
        """The latent code the policy runs with (``None``: not set)."""
        return None if self._latent_code is None else int(np.argmax(self._latent_code))

    def set_latent(self, index: int) -> None:
        """Run an exploration family's policy ``index`` (ValueError when the bundle has no ``latent``
        term or the index is out of range). Kept across :meth:`reset`."""
        n = self.latent_size
        if n is None:
            raise ValueError(f"policy '{self.manifest.name}' has no 'latent' observation term")
        code = one_hot(index, n)
        if self._latent_code is not None and not np.array_equal(code, self._latent_code):
            self.drift.reset()  # another policy of the family: windows and progress start over
        self._latent_code = code

    def state_fresh(self, now: float) -> bool:
        """A state is held and a cycle at ``now`` would not skip it as stale (``max_state_age``)."""
        return self._stamp is not None and abs(float(now) - self._stamp) <= self.max_state_age

    @property
    def state_stamp(self) -> float | None:
        """Stamp of the latest accepted joint state (what the next cycle acts on)."""
        return self._stamp

    @property
    def object_stamp(self) -> float | None:
        """Stamp of the latest accepted tracked object pose."""
        return self._object_stamp

    @property
    def goal(self) -> np.ndarray | None:
        return None if self._goal is None else self._goal.copy()

    # ------------------------------------------------------------------ cycle
    def step(self, now: float) -> StepResult:
        """One control cycle at time ``now`` (same clock as the state stamps)."""
        t0 = time.perf_counter()
        self.cycles += 1
        if self._ticks and float(now) - self._ticks[-1] > 1.5 * self.period:
            self.late_cycles += 1  # the caller's timer overran; counted, the state-age check still applies
        self._ticks.append(float(now))
        if self._q is None:
            return self._skip(now, "no_state", None, t0)
        age = float(now) - self._stamp
        if self._goal is None:
            return self._skip(now, "no_goal", age, t0)
        if abs(age) > self.max_state_age:
            return self._skip(now, "stale_state", age, t0)
        if "object_pose" in self.inputs:
            if self._object is None:
                return self._skip(now, "no_object", age, t0)
            if abs(float(now) - self._object_stamp) > self.config.max_object_age:
                return self._skip(now, "stale_object", age, t0)
        if "latent" in self.inputs and self._latent_code is None:
            return self._skip(now, "no_latent", age, t0)
        m = self.manifest
        tool = None if self.planar is None else self.planar.frame.tip_position(self.robot, self._q)
        obs = build_observation(self.robot, m.term_names,
                                ObsInputs(q=self._q, dq=self._dq, goal=self._goal, last_action=self._last_action,
                                          tool=tool, object=self._object, latent=self._latent_code))
        report = self.ood.update(obs)
        self._last_ood = report
        raw = np.asarray(self.bundle.backend(m.normalize(obs)), dtype=float)
        if not np.all(np.isfinite(raw)):
            return self._skip(now, "non_finite_action", age, t0, report, obs, raw)
        action = limit_change(np.clip(raw, -m.action_clip, m.action_clip), self._last_action, m.action_max_change)
        if self.planar is not None:
            command = self.planar.step(self._q, m.action_scale * action)
        else:
            command = action_to_command(self.robot, m.action_type, action, m.action_scale, m.action_clip, self._q,
                                        m.default_pose)
        compute = time.perf_counter() - t0
        revert = None
        if report.raised and self.config.ood_revert:
            revert = (f"policy '{m.name}': observation out of training distribution ({report.recent} of the last "
                      f"{self.ood.window} cycles above z={self.ood.threshold:g}; worst term '{report.worst_term}' "
                      f"z={report.score:.1f})")
            self.revert_requests += 1
        if compute > self.deadline:
            res = self._skip(now, "deadline_missed", age, t0, report, obs, raw)
            res.revert_reason = revert
            return res
        drift = self.drift.update(obs, action)
        if drift.raised and self.config.drift_revert and revert is None:
            revert = f"policy '{m.name}': drift: {drift.reason}"
            self.revert_requests += 1
        if self.action_log is not None:
            self.action_log.append(action.copy())
        self._last_action = action
        self.commands += 1
        self._compute.append(compute)
        self._ages.append(age)
        return StepResult(now=float(now), command=command, command_type=self.command_type, action=action,
                          compute_time=compute, state_age=age, ood=report, revert_reason=revert, observation=obs,
                          raw_action=raw, drift=drift)

    def _skip(self, now, reason, age, t0, report=None, obs=None, raw=None) -> StepResult:
        self.skipped[reason] += 1
        compute = time.perf_counter() - t0
        self._compute.append(compute)
        if age is not None:
            self._ages.append(age)
        return StepResult(now=float(now), command=None, command_type=self.command_type, skipped=reason,
                          compute_time=compute, state_age=age, ood=report, observation=obs, raw_action=raw)

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, float | int]:
        """Counters and recent percentiles (compute/state age in ms, rate in Hz) for diagnostics."""
        out: dict[str, float | int] = {
            "cycles": self.cycles, "commands": self.commands, "skipped": sum(self.skipped.values()),
            **{f"skipped_{r}": int(c) for r, c in self.skipped.items()},
            "rejected_states": self.rejected_states, "revert_requests": self.revert_requests,
            "ood_alarms": self.ood.alarms, "late_cycles": self.late_cycles, "drift_alarms": self.drift.alarms,
            "drift_action_monitor": int(self.drift.action_stats is not None),
        }
        if self._latent_code is not None:
            out["latent"] = self.latent
        if self._compute:
            c = np.asarray(self._compute) * 1e3
            out.update(compute_p50_ms=float(np.percentile(c, 50)), compute_p99_ms=float(np.percentile(c, 99)),
                       compute_max_ms=float(c.max()))
        if self._ages:
            a = np.asarray(self._ages) * 1e3
            out.update(state_age_p50_ms=float(np.percentile(a, 50)), state_age_p99_ms=float(np.percentile(a, 99)))
        if len(self._ticks) >= 2:
            span = self._ticks[-1] - self._ticks[0]
            if span > 0:
                out["rate_hz"] = (len(self._ticks) - 1) / span
        if self._last_ood is not None:
            out["ood_score"] = self._last_ood.score
            out["ood_sustained"] = int(self._last_ood.sustained)
            out.update({f"ood_{name}": v for name, v in self._last_ood.term_scores.items()})
        if self.drift.last is not None:
            out.update(self.drift.last.values())
        return out

    def health(self, stats: dict, cycles: int, commands: int) -> tuple[str, str]:
        """``(level, message)`` for ``/diagnostics`` (level ``ok``, ``warn`` or ``error``) over a
        window of ``cycles`` cycles of which ``commands`` commanded; ``stats``: :meth:`stats`."""
        if cycles and not commands:
            worst = max(self.skipped.items(), key=lambda rc: rc[1])[0]
            return "error", f"no commands: every cycle skipped ({worst})"
        if stats.get("ood_sustained"):
            return "warn", "observation out of training distribution"
        if stats.get("drift_sustained"):
            return "warn", f"drift: {self.drift.last_reason or 'sustained'}"
        if commands < cycles:
            return "warn", f"{cycles - commands} of {cycles} cycles skipped"
        return "ok", "running"
