"""The safety shield core as the evaluation loop drives it: one step per control cycle.

:class:`EpisodeShield` wraps :class:`simreal_ros.shield.Shield` the way the shield node does:
the measured state and both proposals (policy and baseline) go in, the command to send comes
out, with the interventions, the source that drove and a latched revert. The shield steps at
the controller's period, so every proposal is filtered exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simreal_ros.robot import RobotModel


@dataclass
class ShieldStep:
    command: np.ndarray
    source: str  # policy | baseline | blend | hold
    kinds: list[str] = field(default_factory=list)  # limits that bound the request this cycle
    reverted: str | None = None


def shield_timing(control_period: float) -> dict[str, float]:
    """The shield's timing settings for proposers running at ``control_period`` (s): what the
    graph gives the deployed shield, and the evaluator its own."""
    return dict(control_period=control_period, max_step_gap=2.0 * control_period,
                min_step=min(1e-4, control_period / 10), command_timeout=2.5 * control_period)


class EpisodeShield:
    """One episode's shield.

    Args:
        robot: limits come from it.
        control_period: the controllers' period (s); the shield steps once per period.
        mode: ``active`` (the policy drives) or ``shadow`` (the baseline drives).
        use_shield: ``False`` forwards the driving proposal unfiltered (diagnostics only).
    """

    def __init__(self, robot: RobotModel, control_period: float, mode: str = "active",
                 use_shield: bool = True) -> None:
        from simreal_ros.shield import Shield
        from simreal_ros.shield.config import load_shield_config

        self.mode = mode
        self.use_shield = use_shield
        # the deployed node's settings (config/shield.yaml), timed for this controller's period
        self.config = load_shield_config(**shield_timing(control_period), mode=mode)
        self.shield = Shield(robot, self.config)
        self.period = control_period
        self._started = False

    def _start(self, now: float, q: np.ndarray, dq: np.ndarray, stamp: float) -> None:
        """Bring the shield up one period early, holding ``q``: as on the robot, where the shield
        runs before a controller proposes, the first proposal is then filtered like any other."""
        t0 = now - self.period
        self.shield.update_state(q, dq, stamp=min(stamp, t0), now=t0)
        out = self.shield.step(t0)
        self.start_command = out.command
        self._started = True

    def step(self, now: float, q: np.ndarray, dq: np.ndarray, stamp: float, policy: np.ndarray | None,
             baseline: np.ndarray, revert: str | None = None) -> ShieldStep:
        if not self.use_shield:
            drive = policy if (self.mode == "active" and policy is not None) else baseline
            return ShieldStep(np.asarray(drive, dtype=float), "policy" if drive is policy else "baseline")
        sh = self.shield
        if not self._started:
            self._start(now, q, dq, stamp)
        sh.update_state(q, dq, stamp=stamp, now=now)
        if policy is not None:
            sh.propose("policy", policy, kind="position", now=now)  # this arm takes joint targets
        sh.propose("baseline", baseline, kind="position", now=now)
        if revert:
            sh.request_revert(revert)
        out = sh.step(now)
        if out.command is None:
            raise RuntimeError(f"shield gave no command: {out.reason}")
        kinds = sorted({iv.kind for iv in out.interventions})
        return ShieldStep(out.command, out.source, kinds, out.reverted)
