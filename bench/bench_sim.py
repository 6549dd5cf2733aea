"""Simulation throughput: our ArmSim (impedance controller + measurement noise, 1 kHz
measurements) against bare ``mj_step`` on the same compiled model, in the same run.

Prints one JSON object as its last line. Target: overhead <= 2x bare stepping.
"""

from __future__ import annotations

import json
import time

import mujoco

from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import RandomizationRanges, SensorRanges

SIM_SECONDS = 20.0


def bare(arm: ArmSim) -> float:
    m, d = arm.model, mujoco.MjData(arm.model)
    mujoco.mj_resetDataKeyframe(m, d, 0)
    n = int(SIM_SECONDS / m.opt.timestep)
    t0 = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(m, d)
    return n / (time.perf_counter() - t0)


def ours(arm: ArmSim) -> float:
    arm.reset(seed=0)
    arm.set_command(arm.robot.ready_pose)
    n = int(SIM_SECONDS / arm.config.physics_dt)
    t0 = time.perf_counter()
    for _ in range(int(SIM_SECONDS / 0.1)):  # drain measurements as a consumer would, every 0.1 s
        arm.advance(0.1)
        arm.pop_measurements()
    return n / (time.perf_counter() - t0)


def main() -> None:
    noise = SensorRanges(position_noise_std=(1e-4, 1e-4), velocity_noise_std=(1e-3, 1e-3),
                         effort_noise_std=(0.05, 0.05))
    arm = ArmSim(ArmSimConfig(physics_dt=0.001, measurement_period=0.001, ranges=RandomizationRanges(sensor=noise)))
    bare_sps, ours_sps = [], []
    for _ in range(3):  # interleave to share machine noise between both
        bare_sps.append(bare(arm))
        ours_sps.append(ours(arm))
    b, o = max(bare_sps), max(ours_sps)
    dt = arm.config.physics_dt
    print(f"bare mj_step: {b:,.0f} steps/s (RTF {b * dt:.1f}); ArmSim: {o:,.0f} steps/s (RTF {o * dt:.1f})")
    print(json.dumps({
        "bare_steps_per_s": round(b), "sim_steps_per_s": round(o),
        "bare_rtf": round(b * dt, 1), "sim_rtf": round(o * dt, 1),
        "overhead_ratio_vs_bare": round(b / o, 2), "target_overhead_ratio": 2.0,
    }))


if __name__ == "__main__":
    main()
