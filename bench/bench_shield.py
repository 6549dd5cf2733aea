"""Per-call cost of the safety shield's full filter (7 joints) against a plain ``np.clip``.

Measures :meth:`simreal_ros.shield.Shield.step` (watchdogs, mode logic, every limit kind,
braking check, interventions) in two workloads, with ``np.clip`` of the same 7-vector
timed in the same loop as the baseline:

* ``track``: a policy that moves smoothly within the limits (the common case: pass-through);
* ``clip``: a policy that jumps around, so most cycles clip and label interventions;
* ``clip20``: the same at a 20 Hz control period (the coupling pass, mass matrix and a second
  filter pass, runs at every step since ``coupling_min_step`` is 0; it used to run only here);
* ``box``: ``clip`` with the Cartesian box on (``config/shield.yaml``'s box: the table top,
  every link's collision geometry), so the braking path is simulated near its faces.

Also reports the whole cycle a node runs (``update_state`` + ``propose`` + ``step``).
Target: shield p99 <= 30 us. Besides the p99 over all cycles, the p99 of the least
disturbed of 5 blocks is reported (other processes' time slices dominate the tail on a
shared 2-core machine). The last line is one JSON object.

    python bench/bench_shield.py [--cycles 20000]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import numpy as np

from simreal_ros.robot import load_robot
from simreal_ros.shield import Shield, ShieldConfig


def run(workload: str, cycles: int, seed: int = 0) -> dict[str, np.ndarray]:
    robot = load_robot()
    dt = 0.05 if workload == "clip20" else 0.01
    shield = Shield(robot, ShieldConfig(control_period=dt, max_step_gap=max(0.05, 2 * dt), revert_fraction=1.0,
                                        cartesian_box_enabled=workload == "box"))
    rng = np.random.default_rng(seed)
    q = robot.ready_pose.copy()
    dq = np.zeros(robot.n_joints)
    lo, hi = robot.limits.position_min, robot.limits.position_max
    now = 0.0
    shield.update_state(q, dq, now, now)
    shield.step(now)
    x = rng.random(robot.n_joints)
    step_t, cycle_t, clip_t = (np.empty(cycles) for _ in range(3))
    amp = 0.2 * np.minimum(robot.limits.velocity, 1.0)
    clipped = 0
    perf = time.perf_counter
    for k in range(cycles):
        now += dt
        if workload == "track":
            target = robot.ready_pose + amp * np.sin(0.5 * now)
        else:
            target = rng.uniform(lo, hi)
        t0 = perf()
        shield.update_state(q, dq, now, now)
        shield.propose("policy", target, kind="position", now=now)
        t1 = perf()
        out = shield.step(now)
        t2 = perf()
        np.clip(x, lo, hi)
        t3 = perf()
        step_t[k], cycle_t[k], clip_t[k] = t2 - t1, t2 - t0, t3 - t2
        clipped += bool(out.interventions)
        q, dq = out.command, (out.command - q) / dt
    return {"step": step_t, "cycle": cycle_t, "clip": clip_t, "clipped_share": clipped / cycles}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20000)
    args = ap.parse_args()
    gc.disable()
    result: dict[str, float] = {}
    for workload in ("track", "clip", "clip20", "box"):
        run(workload, 2000)  # warm-up
        r = run(workload, args.cycles)
        for key in ("step", "cycle", "clip"):
            p50, p99 = np.percentile(r[key], [50, 99]) * 1e6
            # p99 of the least disturbed of 5 consecutive blocks: on a shared machine the
            # overall p99 of a 100+ us call mostly measures other processes' time slices
            best = min(np.percentile(b, 99) for b in np.array_split(r[key], 5)) * 1e6
            name = {"step": "shield", "cycle": "shield_cycle", "clip": "np_clip"}[key]
            result[f"{workload}_{name}_p50_us"] = round(float(p50), 2)
            result[f"{workload}_{name}_p99_us"] = round(float(p99), 2)
            result[f"{workload}_{name}_p99_best_block_us"] = round(float(best), 2)
        result[f"{workload}_clipped_share"] = round(r["clipped_share"], 3)
        print(f"{workload}: shield p50 {result[f'{workload}_shield_p50_us']} us, p99 "
              f"{result[f'{workload}_shield_p99_us']} us; np.clip p50 {result[f'{workload}_np_clip_p50_us']} us; "
              f"{100 * r['clipped_share']:.0f}% of cycles clipped")
    result["shield_p99_us"] = result["track_shield_p99_us"]
    result["np_clip_p99_us"] = result["track_np_clip_p99_us"]
    result["shield_p99_best_block_us"] = result["track_shield_p99_best_block_us"]
    result["ratio_vs_np_clip"] = round(result["track_shield_p50_us"] / result["track_np_clip_p50_us"], 1)
    result["target_p99_us"] = 30.0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
