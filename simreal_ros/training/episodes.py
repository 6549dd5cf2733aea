"""One evaluation episode: sim -> measured state -> controller -> safety shield -> sim.

The controller is either the policy, run by the deployment executor core
(:class:`~simreal_ros.policy.executor.PolicyExecutor`), or the task's baseline controller
(reach: :class:`~simreal_ros.baseline.BaselineController`; push: the scripted pusher
:class:`~simreal_ros.baseline.pusher.ScriptedPusher`, fed the tracked puck). Its proposed joint targets pass through
the safety shield core exactly as on the robot; what the shield sends is what the simulated
arm receives. A policy cycle that is skipped, or whose executor asks for a revert, falls
back to the baseline command as the shield does in deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
    commands: int  # commands sent (one per control cycle)
    shield_kinds: dict[str, int]
    limit_violations: int  # sent commands (check_limits) + true joint positions/velocities
    violation_kinds: dict[str, int]
    reverts: int  # cycles in which the policy did not drive (skipped cycle, revert, blend)
    reverted: str | None  # the shield's latched revert reason, if it reverted
    distances: list[float] = field(default_factory=list)
    frames: list[Any] | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("distances", "frames")}


class _BaselineRunner:
    """The baseline drives (the shield in ``shadow`` mode)."""

    mode = "shadow"

    def __init__(self, robot, rate_hz: float) -> None:
        from simreal_ros.baseline import BaselineConfig

        self.ctl = BaselineController(robot, BaselineConfig(rate_hz=rate_hz))

    def reset(self, q: np.ndarray, goal: np.ndarray, seed: int = 0) -> None:
        # The previous episode's goal goes first: reset() would otherwise solve it and seed the
        # new goal's IK from that solution, so an episode depended on the one run before it.
        self.ctl.clear_goal()
        self.ctl.reset(q)
        self.ctl.set_goal(goal)

    def propose(self, q, dq, stamp: float, now: float) -> tuple[np.ndarray | None, np.ndarray, str | None]:
        """(policy proposal or None, baseline proposal, revert request or None)."""
        return None, self.ctl.step(q), None

    def observe_sent(self, sent: np.ndarray, source: str, now: float) -> None:
        pass


class _PolicyRunner:
    """The executor core drives (``active``); the baseline runs alongside as the shield's fallback."""

    mode = "active"

    def __init__(self, bundle, robot, rate_hz: float) -> None:
        from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor

        # The sim waits for the policy, so the executor's wall-clock compute deadline has nothing
        # to guard here: with it, a cycle slowed by machine load was skipped and the same seed
        # gave other numbers on a busy machine (or another worker). `simreal policy check` times it.
        self.ex = PolicyExecutor(bundle, robot, ExecutorConfig(compute_deadline=1e9))
        self.fallback = _BaselineRunner(robot, rate_hz)
        self._last_sent: tuple[float, np.ndarray] | None = None

    def reset(self, q: np.ndarray, goal: np.ndarray, seed: int = 0) -> None:
        self.ex.reset()
        self.ex.set_goal(goal)
        self.fallback.reset(q, goal)
        self._last_sent = None

    def propose(self, q, dq, stamp: float, now: float) -> tuple[np.ndarray | None, np.ndarray, str | None]:
        _, base, _ = self.fallback.propose(q, dq, stamp, now)
        self.ex.update_state(q, dq, stamp)
        res = self.ex.step(now)
        return res.command, base, res.revert_reason

    def observe_sent(self, sent: np.ndarray, source: str, now: float) -> None:
        """While the policy drives, keep the fallback baseline on the sent motion (bumpless revert)."""
        v = None
        if self._last_sent is not None and now > self._last_sent[0]:
            v = (sent - self._last_sent[1]) / (now - self._last_sent[0])
        self._last_sent = (now, np.array(sent, dtype=float))
        if source == "policy":
            self.fallback.ctl.sync(sent, v)


class _PushBaselineRunner:
    """The scripted pusher drives (``shadow``), from the measured tool and the tracked puck."""

    mode = "shadow"

    def __init__(self, env) -> None:
        from simreal_ros.baseline.pusher import ScriptedPusher
        from simreal_ros.robot.planar import PlanarReference

        self.env = env
        self.pusher = ScriptedPusher(env.task.action_scale, env.task.puck_radius, env.tool.radius)
        self.ref = PlanarReference(env.robot, env.frame, env.task.max_lead)

    def reset(self, q: np.ndarray, goal: np.ndarray, seed: int = 0) -> None:
        self.ref.reset()

    def propose(self, q, dq, stamp: float, now: float) -> tuple[np.ndarray | None, np.ndarray, str | None]:
        env = self.env
        tip = env.frame.tip_position(env.robot, q)
        a = self.pusher.act(tip, env.tracked.position, env.goal)
        return None, self.ref.step(q, env.task.action_scale * a), None

    def observe_sent(self, sent: np.ndarray, source: str, now: float) -> None:
        pass


class _PushPolicyRunner:
    """The executor core drives a push bundle (tracked puck as its object input); the scripted
    pusher runs alongside as the shield's fallback."""

    mode = "active"

    def __init__(self, bundle, env) -> None:
        from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor

        self.env = env
        self.ex = PolicyExecutor(bundle, env.robot, ExecutorConfig(compute_deadline=1e9))  # see _PolicyRunner
        self.fallback = _PushBaselineRunner(env)
        #: an exploration family's code for every episode; ``None``: the episode seed's (seed mod N)
        self.latent: int | None = None

    def reset(self, q: np.ndarray, goal: np.ndarray, seed: int = 0) -> None:
        self.ex.reset()
        self.ex.set_goal(self.env.goal_point)
        if self.ex.latent_size is not None:
            self.ex.set_latent(self.latent if self.latent is not None else seed % self.ex.latent_size)
        self.fallback.reset(q, goal)

    def propose(self, q, dq, stamp: float, now: float) -> tuple[np.ndarray | None, np.ndarray, str | None]:
        _, base, _ = self.fallback.propose(q, dq, stamp, now)
        self.ex.update_state(q, dq, stamp)
        tr = self.env.tracked
        self.ex.update_object(tr.position, tr.stamp)
        res = self.ex.step(now)
        return res.command, base, res.revert_reason

    def observe_sent(self, sent: np.ndarray, source: str, now: float) -> None:
        pass


def make_runner(kind: str, robot, rate_hz: float, bundle=None, env=None):
    """The runner of ``kind`` (policy | baseline); a push env gets the push runners."""
    push = env is not None and getattr(env, "ends_on_success", False)
    if kind == "baseline":
        return _PushBaselineRunner(env) if push else _BaselineRunner(robot, rate_hz)
    if kind == "policy":
        if bundle is None:
            raise ValueError("the policy runner needs a loaded bundle")
        return _PushPolicyRunner(bundle, env) if push else _PolicyRunner(bundle, robot, rate_hz)
    raise ValueError(f"controller must be 'policy' or 'baseline', got {kind!r}")


def _jerk_stats(cmds: np.ndarray, dt: float) -> tuple[float, float]:
    if len(cmds) < 4:
        return 0.0, 0.0
    acc = np.diff(cmds, n=2, axis=0) / dt**2
    jerk = np.diff(cmds, n=3, axis=0) / dt**3
    return float(np.sqrt(np.mean(jerk**2))), float(np.sqrt(np.mean(acc**2)))


def run_episode(env: ReachEnv, runner, seed: int, use_shield: bool, name: str,
                render: bool = False) -> EpisodeResult:
    """Run one episode of ``runner`` on ``env`` (seeded: same goal and randomization draw per seed).

    A push episode ends at its first success (or when the puck falls off the table), as the env
    does; its distance trace is then padded with NaN to the full episode length (for plots).
    """
    from simreal_ros.shield.limits import check_limits
    from simreal_ros.training.shielding import EpisodeShield

    robot, arm = env.robot, env.arm
    lim = robot.limits
    _, info = env.reset(seed=seed)
    goal = info["goal"]
    meas = env.measurement
    runner.reset(meas.position, goal, seed)
    period = env.control_period
    shield = EpisodeShield(robot, period, mode=runner.mode, use_shield=use_shield)
    # the shield comes up holding the start pose one period before the first cycle
    sent_hist, times, dists = [meas.position.copy()], [arm.time - period], []
    interventions, off_policy = 0, 0
    kinds: dict[str, int] = {}
    true_viol: dict[str, int] = {}
    first_success = math.nan
    frames = [] if render else None
    status = env.status()
    for k in range(env.max_steps):
        now = arm.time
        meas = env.measurement
        policy, base, revert = runner.propose(meas.position, meas.velocity, meas.stamp, now)
        out = shield.step(now, meas.position, meas.velocity, meas.stamp, policy, base, revert)
        if out.kinds:
            interventions += 1
            for w in out.kinds:
                kinds[w] = kinds.get(w, 0) + 1
        if runner.mode == "active" and out.source != "policy":
            off_policy += 1
        runner.observe_sent(out.command, out.source, now)
        sent_hist.append(np.array(out.command, dtype=float))
        times.append(now)
        status = env.advance(out.command)
        truth = arm.true_state()
        if np.any((truth.position < lim.position_min) | (truth.position > lim.position_max)):
            true_viol["true_position"] = true_viol.get("true_position", 0) + 1
        if np.any(np.abs(truth.velocity) > lim.velocity):
            true_viol["true_velocity"] = true_viol.get("true_velocity", 0) + 1
        dists.append(status["distance"])
        if status["is_success"] and math.isnan(first_success):
            first_success = (k + 1) * period
        if render:
            frames.append(env.render())
        if getattr(env, "ends_on_success", False) and (status["is_success"] or status.get("fell")):
            break
    dists += [math.nan] * (env.max_steps - len(dists))
    cmds = np.array(sent_hist)
    sc = shield.config  # checked with the settings the shield ran with
    viol = check_limits(robot, times, cmds, max_step_gap=sc.max_step_gap, min_step=sc.min_step,
                        position_margin=sc.position_margin, starts_at_rest=True)
    viol_kinds = dict(true_viol)
    for v in viol:
        viol_kinds[v.kind] = viol_kinds.get(v.kind, 0) + 1
    jerk, accel = _jerk_stats(cmds, period)
    return EpisodeResult(
        controller=name, seed=seed, success=bool(status["is_success"]), final_distance=float(status["distance"]),
        time_to_target=first_success, command_jerk_rms=jerk, command_accel_rms=accel,
        shield_interventions=interventions, commands=len(sent_hist) - 1, shield_kinds=kinds, limit_violations=sum(viol_kinds.values()),
        violation_kinds=viol_kinds, reverts=off_policy, reverted=shield.shield.modes.reverted if use_shield else None,
        distances=dists, frames=frames)
