"""The safety shield core as the evaluation loop uses it: one call per control cycle.

``factory(t0, q0)`` makes a fresh per-episode shield ``shield(now, proposed, fallback, q, dq)
-> (sent, changed, kinds)``: ``sent`` is the command the arm receives, ``changed`` whether
the shield altered the proposal and ``kinds`` which limits bound it. It runs the shield
package's pure filter (:func:`simreal_ros.shield.filter.position_step`) with the robot's
limits and the impedance gains the sim uses, exactly as the shield node does per cycle.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from simreal_ros.robot import RobotModel

ShieldFn = Callable[[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, bool, list[str]]]


def shield_factory(robot: RobotModel, control_period: float, position_margin: float = 0.0,
                   stiffness=None, damping=None) -> Callable[[float, np.ndarray], ShieldFn]:
    """Per-episode shield maker for ``robot`` at the controller's period (s)."""
    from simreal_ros.shield.filter import MotionState, position_step
    from simreal_ros.shield.limits import ShieldLimits
    from simreal_ros.sim.arm import DEFAULT_DAMPING, DEFAULT_STIFFNESS

    lim = ShieldLimits.from_robot(robot, position_margin=position_margin, max_step_gap=max(0.05, 1.5 * control_period))
    K = np.asarray(DEFAULT_STIFFNESS if stiffness is None else stiffness, dtype=float)
    D = np.asarray(DEFAULT_DAMPING if damping is None else damping, dtype=float)

    def make(t0: float, q0: np.ndarray) -> ShieldFn:
        n = len(q0)
        # as if ``q0`` had been sent one period before the first cycle, at rest
        state = {"st": MotionState(float(t0) - control_period, np.asarray(q0, dtype=float), np.zeros(n), np.zeros(n), None)}

        def shield(now: float, proposed: np.ndarray, fallback: np.ndarray, q: np.ndarray,
                   dq: np.ndarray) -> tuple[np.ndarray, bool, list[str]]:
            res = position_step(lim, state["st"], np.asarray(proposed, dtype=float), float(now), meas=(q, dq),
                                K=K, D=D)
            state["st"] = res.state
            changed = bool(np.any(res.clipped))
            kinds = sorted({res.kinds[i] for i in np.flatnonzero(res.clipped)}) if changed else []
            return res.command, changed, kinds

        return shield

    return make
