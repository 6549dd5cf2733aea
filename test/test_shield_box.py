"""The Cartesian box holds along the shield's own braking (issue 9, defect 5): the flange of
every sent target stays inside the box, also while the shield brakes because a target or its
braking path would leave it, or after an e-stop. No ROS."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig

ROBOT = load_robot()
N = ROBOT.n_joints
LIM = ROBOT.limits
#: m; the braking path at short steps is the joints' time-optimal stop, integrated at 40 instants
TOL = 2e-4


RATES = [0.001, 0.005, 0.01, 0.02, 0.05]  # s: the control period is drawn per case


def worst_outside(seed: int, seconds: float = 3.0) -> tuple[float, float]:
    """A random control period, a random box around a random start, random far targets
    (changed now and then), an e-stop at a random step in half the runs: (the worst distance of
    a sent target's flange outside the box in m, the period)."""
    rng = np.random.default_rng(seed)
    dt = float(rng.choice(RATES))
    q = np.clip(ROBOT.ready_pose + rng.uniform(-0.6, 0.6, N), LIM.position_min + 0.05, LIM.position_max - 0.05)
    p0 = ROBOT.fk(q)[:3, 3]
    half = rng.uniform(0.05, 0.3, 3)
    lo, hi = p0 - half * rng.uniform(0.2, 1.0, 3), p0 + half * rng.uniform(0.2, 1.0, 3)
    shield = Shield(ROBOT, ShieldConfig(control_period=dt, max_step_gap=2 * dt, revert_fraction=1.0,
                                        cartesian_box_enabled=True, cartesian_box=(*lo, *hi),
                                        cartesian_box_links=False, cartesian_box_clearance=0.0))
    t = 0.0
    shield.update_state(q, np.zeros(N), t, t)
    shield.step(t)
    target = np.clip(q + rng.uniform(-2, 2, N), LIM.position_min, LIM.position_max)
    k_stop = int(rng.integers(3, 200)) if rng.random() < 0.5 else -1
    worst = 0.0
    for k in range(int(seconds / dt)):
        if k == k_stop:
            shield.estop("test")
        if rng.random() < 0.02:
            target = np.clip(q + rng.uniform(-2, 2, N), LIM.position_min, LIM.position_max)
        rng.uniform()  # (the generator's sequence of the probe these cases come from)
        t += dt
        shield.update_state(q, np.zeros(N), t, t)  # the arm tracks the sent target
        shield.propose("policy", target, kind="position", now=t)
        q = shield.step(t).command.copy()
        p = ROBOT.fk(q)[:3, 3]
        worst = max(worst, float(np.linalg.norm(p - np.clip(p, lo, hi))))
    return worst, dt


# On the old shield (it checked only the target and the joint-space end of braking, not the path
# between) these 1 kHz cases left the box by 4.7 (49), 4.2 (14) and 2.9 (57) mm (seeds 23 and 27:
# 0.7 and 1.9 mm; left out for time: ~13 s each, the box check costs ~4 ms a step near a face).
@pytest.mark.parametrize("seed", [14, 49, 57])
def test_the_flange_stays_in_the_box_along_the_braking_path_at_1khz(seed):
    worst, dt = worst_outside(seed)
    assert dt == 0.001 and worst <= TOL, (worst, dt)


@pytest.mark.parametrize("seed", [2, 15, 31, 45])
def test_the_flange_stays_in_the_box_at_slower_rates(seed):
    worst, dt = worst_outside(seed)
    assert dt > 0.001 and worst <= TOL, (worst, dt)
