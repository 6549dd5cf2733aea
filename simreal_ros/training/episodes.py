"""One evaluation episode: sim -> measured state -> controller -> safety shield -> sim.

The controller is either the policy, run by the deployment executor core
(:class:`~simreal_ros.policy.executor.PolicyExecutor`), or the baseline controller
(:class:`~simreal_ros.baseline.BaselineController`). Its proposed joint targets pass through
the safety shield core exactly as on the robot; what the shield sends is what the simulated
arm receives. A policy cycle that is skipped, or whose executor asks for a revert, falls
back to the baseline command as the shield does in deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from simreal_ros.baseline import BaselineController
from simreal_ros.sim.env import ReachEnv


@dataclass
class EpisodeResult:
    """Per-episode metrics (SI units) and the distance trace for plots."""

    controller: str
    seed: int
    success: bool
    final_distance: float
    time_to_target: float  # s to the first success (nan if never)
    command_jerk_rms: float  # rad/s^3, RMS third difference of the sent targets
    command_accel_rms: float  # rad/s^2
    shield_interventions: int  # cycles in which the shield changed the proposed command
    shield_kinds: dict[str, int]
    limit_violations: int  # sent commands (check_limits) + true joint positions/velocities
    violation_kinds: dict[str, int]
    reverts: int  # cycles run on the baseline because the executor skipped or asked to revert
    distances: list[float] = field(default_factory=list)
    frames: list[Any] | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("distances", "frames")}


class _BaselineRunner:
    def __init__(self, robot, rate_hz: float) -> None:
        from simreal_ros.baseline import BaselineConfig

        self.ctl = BaselineController(robot, BaselineConfig(rate_hz=rate_hz))

    def reset(self, q: np.ndarray, goal: np.ndarray) -> None:
        self.ctl.reset(q)
        self.ctl.set_goal(goal)

    def propose(self, q, dq, stamp: float, now: float) -> tuple[np.ndarray, np.ndarray, bool]:
        cmd = self.ctl.step(q)
        return cmd, cmd, False


class _PolicyRunner:
    """The executor core; the baseline runs alongside as the fallback (as the shield has it)."""

    def __init__(self, bundle, robot, rate_hz: float) -> None:
        from simreal_ros.policy.executor import PolicyExecutor

        self.ex = PolicyExecutor(bundle, robot)
        self.fallback = _BaselineRunner(robot, rate_hz)
        self.reverted = False
        self._last_sent = None

    def reset(self, q: np.ndarray, goal: np.ndarray) -> None:
        self.ex.reset()
        self.ex.set_goal(goal)
        self.fallback.reset(q, goal)
        self.reverted = False
        self._last_sent: tuple[float, np.ndarray] | None = None

    def observe_sent(self, sent: np.ndarray, now: float) -> None:
        """Keep the fallback baseline on the sent motion while the policy is in command."""
        if self.reverted:
            return
        v = None
        if self._last_sent is not None and now > self._last_sent[0]:
            v = (sent - self._last_sent[1]) / (now - self._last_sent[0])
        self._last_sent = (now, np.array(sent, dtype=float))
        self.fallback.ctl.sync(sent, v)

    def propose(self, q, dq, stamp: float, now: float) -> tuple[np.ndarray, np.ndarray, bool]:
        base, _, _ = self.fallback.propose(q, dq, stamp, now)
        self.ex.update_state(q, dq, stamp)
        res = self.ex.step(now)
        if res.revert_reason:
            self.reverted = True  # latched, as the shield latches a monitor trip
        if self.reverted or res.command is None:
            return base, base, True
        return res.command, base, False


def make_runner(kind: str, robot, rate_hz: float, bundle=None):
    if kind == "baseline":
        return _BaselineRunner(robot, rate_hz)
    if kind == "policy":
        if bundle is None:
            raise ValueError("the policy runner needs a loaded bundle")
        return _PolicyRunner(bundle, robot, rate_hz)
    raise ValueError(f"controller must be 'policy' or 'baseline', got {kind!r}")


def _jerk_stats(cmds: np.ndarray, dt: float) -> tuple[float, float]:
    if len(cmds) < 4:
        return 0.0, 0.0
    acc = np.diff(cmds, n=2, axis=0) / dt**2
    jerk = np.diff(cmds, n=3, axis=0) / dt**3
    return float(np.sqrt(np.mean(jerk**2))), float(np.sqrt(np.mean(acc**2)))


def run_episode(env: ReachEnv, runner, seed: int, shield_factory: Callable[[float, np.ndarray], Any] | None,
                name: str, render: bool = False) -> EpisodeResult:
    """Run one episode of ``runner`` on ``env`` (seeded: same goal and randomization draw per seed).

    ``shield_factory(t0, q0)`` returns a fresh shield for the episode (see
    :mod:`simreal_ros.training.shielding`); ``None`` sends the proposals unfiltered.
    """
    from simreal_ros.shield.limits import check_limits

    robot, arm = env.robot, env.arm
    lim = robot.limits
    _, info = env.reset(seed=seed)
    goal = info["goal"]
    meas = env._last_meas
    runner.reset(meas.position, goal)
    shield = shield_factory(arm.time, meas.position.copy()) if shield_factory else None
    period = env.control_period
    sent_hist, times, states, dists = [], [], [], []
    interventions, reverts = 0, 0
    kinds: dict[str, int] = {}
    true_viol: dict[str, int] = {}
    first_success = math.nan
    frames = [] if render else None
    status = env._status()
    for k in range(env.max_steps):
        now = arm.time
        meas = env._last_meas
        proposed, fallback, reverted = runner.propose(meas.position, meas.velocity, meas.stamp, now)
        reverts += int(reverted)
        if shield is not None:
            sent, changed, why = shield(now, proposed, fallback, meas.position, meas.velocity)
            if changed:
                interventions += 1
                for w in why:
                    kinds[w] = kinds.get(w, 0) + 1
        else:
            sent = proposed
        if hasattr(runner, "observe_sent"):
            runner.observe_sent(np.asarray(sent, dtype=float), now)
        sent_hist.append(np.array(sent, dtype=float))
        times.append(now)
        states.append((meas.position.copy(), meas.velocity.copy()))
        arm.set_command(sent)
        arm.advance(period)
        env._measure()
        truth = arm.true_state()
        if np.any((truth.position < lim.position_min) | (truth.position > lim.position_max)):
            true_viol["true_position"] = true_viol.get("true_position", 0) + 1
        if np.any(np.abs(truth.velocity) > lim.velocity):
            true_viol["true_velocity"] = true_viol.get("true_velocity", 0) + 1
        status = env._status()
        dists.append(status["distance"])
        if status["is_success"] and math.isnan(first_success):
            first_success = (k + 1) * period
        if render:
            frames.append(env.render())
    cmds = np.array(sent_hist)
    viol = check_limits(robot, times, cmds, max_step_gap=max(0.05, 1.5 * period))
    viol_kinds = dict(true_viol)
    for v in viol:
        viol_kinds[v.kind] = viol_kinds.get(v.kind, 0) + 1
    jerk, accel = _jerk_stats(cmds, period)
    return EpisodeResult(
        controller=name, seed=seed, success=bool(status["is_success"]), final_distance=float(status["distance"]),
        time_to_target=first_success, command_jerk_rms=jerk, command_accel_rms=accel,
        shield_interventions=interventions, shield_kinds=kinds, limit_violations=sum(viol_kinds.values()),
        violation_kinds=viol_kinds, reverts=reverts, distances=dists, frames=frames)
