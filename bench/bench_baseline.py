"""Baseline controller cycle cost: one BaselineController.step (warm-started DLS IK + Ruckig +
closed-loop correction) against one forward-kinematics + Jacobian evaluation of the same robot,
in the same run, interleaved. Also thread CPU time, so preemption on a loaded machine is told
apart from the controller's own cost.

Prints one JSON object as its last line. Target: p99 well under the 50 ms control period
(below 10% of it, 5 ms).
"""

from __future__ import annotations

import json
import time

import numpy as np

from simreal_ros.baseline import BaselineController
from simreal_ros.robot import load_robot
from simreal_ros.sim.env import sample_goal

CYCLES = 2000


def main() -> None:
    robot = load_robot()
    rng = np.random.default_rng(0)
    goals = [sample_goal(robot, rng) for _ in range(CYCLES // 40 + 1)]
    ctl = BaselineController(robot)
    ctl.reset(robot.ready_pose)
    step_wall, step_cpu, kin_wall = [], [], []
    for k in range(CYCLES):
        if k % 40 == 0:
            ctl.set_goal(goals[k // 40])  # a new goal every 2 s of control
        q = ctl.command + rng.normal(scale=1e-4, size=robot.n_joints)
        t0, c0 = time.perf_counter(), time.thread_time()
        ctl.step(q)
        step_cpu.append(time.thread_time() - c0)
        step_wall.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        robot.fk(q)
        robot.jacobian(q)
        kin_wall.append(time.perf_counter() - t0)
    us = lambda xs, p: float(np.percentile(np.asarray(xs) * 1e6, p))  # noqa: E731
    out = {
        "baseline_step_p50_us": round(us(step_wall, 50), 1), "baseline_step_p99_us": round(us(step_wall, 99), 1),
        "baseline_step_cpu_p99_us": round(us(step_cpu, 99), 1),
        "fk_jacobian_p50_us": round(us(kin_wall, 50), 1),
        "ratio_vs_fk_jacobian": round(us(step_wall, 50) / us(kin_wall, 50), 1),
        "control_period_us": 50_000, "target_p99_us": 5_000,
    }
    print(f"baseline step p50 {out['baseline_step_p50_us']} us, p99 {out['baseline_step_p99_us']} us "
          f"({out['ratio_vs_fk_jacobian']}x one FK+Jacobian)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
