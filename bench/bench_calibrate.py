"""Calibration fit: wall time of one fit of every parameter on 60 s of recorded data, the number
of rollouts it took, and rollouts per second against one bare ``mujoco.rollout`` of the same data
(same replay model, same steps), measured in the same run.

The data: 60 s of the package's excitation through the shield on a hidden arm (friction, damping,
armature, gains, 1.5 kg payload, 10 ms action latency, 4 ms observation latency, encoder bias,
sensor noise, and the shape-based link inertias the URDF had before instead of its identified ones).
The per-parameter results (true, estimate, std) and each stage of the fit (free parameters,
replayed seconds, iterations, rollouts, wall time) are printed before the last line.

Target: <= 300 s on this 2-core machine. Prints one JSON object as its last line.

    python bench/bench_calibrate.py [--duration 60] [--parameters friction,damping,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import mujoco
import mujoco.rollout
import numpy as np

from simreal_ros.calibrate.fit import KINDS, FitConfig, fit
from simreal_ros.calibrate.replay import Replay, cut_chunks
from simreal_ros.calibrate.simsession import SHAPE_BASED_INERTIA, HiddenArm, hidden_arm_sim, record_session
from simreal_ros.robot import load_robot

HIDDEN = HiddenArm(
    friction=(1.5, 1.5, 1.2, 1.2, 0.6, 0.6, 0.3), damping=(0.8, 0.9, 0.7, 0.6, 0.2, 0.15, 0.1),
    armature=(0.1, 0.1, 0.08, 0.08, 0.02, 0.02, 0.01), stiffness_scale=(1.25, 0.8, 1.2, 0.85, 1.25, 0.8, 1.2),
    damping_scale=(0.8, 1.2, 0.85, 1.25, 0.8, 1.2, 0.85), payload_mass=1.5, action_latency=0.010,
    observation_latency=0.004, position_bias=(1.5e-3, -1.2e-3, 0.8e-3, -1.5e-3, 1.2e-3, -0.8e-3, 1.0e-3),
    position_noise_std=1e-4, velocity_noise_std=5e-3, effort_noise_std=0.05, link_inertia=SHAPE_BASED_INERTIA)


def truth(name: str, joints: tuple[str, ...]) -> float | None:
    kind, _, who = name.partition("/")
    h = HIDDEN
    per = {"friction": h.friction, "damping": h.damping, "armature": h.armature, "stiffness_scale": h.stiffness_scale,
           "damping_scale": h.damping_scale, "bias": h.position_bias}
    if kind in per:
        return float(per[kind][joints.index(who)])
    if kind == "link_mass":
        return SHAPE_BASED_INERTIA[who][0]
    return {"payload_mass": h.payload_mass, "action_latency": h.action_latency,
            "observation_latency": h.observation_latency}.get(name)


def bare_rollout_rate(robot, cfg: FitConfig, session) -> tuple[float, int]:
    """(rollouts/s, steps per rollout) of bare ``mujoco.rollout`` calls on the first fitted
    chunk: the replay model, the same steps, as many rollouts per call as the fit batches, one
    MjData per thread; best of two calls."""
    rp = Replay(robot, cfg, True)
    d = session.duration
    chunks = cut_chunks(session, 0, 0.0, (1 - cfg.holdout_fraction) * d, cfg, rp.sensor_cols, True, cfg.chunk_duration)
    m = rp.model0
    data = [mujoco.MjData(m) for _ in range(cfg.threads or os.cpu_count() or 1)]
    n_models = 4 * len(data)  # the fit's batch (Replay.rollout)
    c = chunks[0]
    dd = mujoco.MjData(m)
    dd.qpos[rp.qpos_adr] = c.initial_q
    state = np.empty(mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS))
    mujoco.mj_getState(m, dd, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    ctrl = np.repeat(c.control[None, :-1], n_models, axis=0)
    init = np.repeat(state[None], n_models, axis=0)
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        mujoco.rollout.rollout([m] * n_models, data, init, ctrl)
        best = max(best, n_models / (time.perf_counter() - t))
    return best, ctrl.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="recorded seconds (default 60)")
    ap.add_argument("--parameters", default=",".join(KINDS), help="kinds to fit (default: all)")
    args = ap.parse_args()
    robot = load_robot()
    load_start = os.getloadavg()[0]
    t = time.perf_counter()
    session = record_session(hidden_arm_sim(HIDDEN, robot, seed=2), args.duration, name="bench_hidden")
    record_s = time.perf_counter() - t
    cfg = FitConfig(parameters=tuple(args.parameters.split(",")))
    cal = fit([session], cfg, robot, progress=sys.stderr.isatty())
    st = cal.stats
    bare_rps, bare_steps = bare_rollout_rate(robot, cfg, session)
    rows = []
    for name, e in cal.estimates.items():
        true = truth(name, robot.joint_names)
        if true is None and not name.startswith("link_mass"):
            continue
        val = e.value if e.identified else e.fitted
        err = None if true is None or val is None else float(val) - true
        rows.append({"name": name, "true": true, "estimate": val, "std": e.std, "identified": e.identified,
                     "error": err, "relative_error": None if err is None or not true else err / true})
        print(f"{name:30s} true {true!s:>10}  est {val if val is None else round(float(val), 6)!s:>12}  "
              f"std {e.std if e.std is None else round(float(np.max(e.std)), 6)!s:>10}  "
              f"{'' if e.identified else 'NOT IDENTIFIED: ' + e.reason[:60]}")
    for s in st["stages"]:
        print(f"stage {s['name']:9s} {s['free_parameters']:4d} free  {s['replayed_s']:5.1f} s replayed  "
              f"{s['iterations']:3d} iterations  {s['rollouts']:6d} rollouts  {s['wall_time_s']:6.1f} s  "
              f"objective {s['objective_start']:.4g} -> {s['objective_end']:.4g}  {s['stop']}")
    before, after = cal.before.position_rmse, cal.after.position_rmse
    print("held-out position RMSE (mrad) before", np.round(before * 1e3, 3).tolist(), "after",
          np.round(after * 1e3, 3).tolist())
    steps_per_rollout = st["rollout_steps"] / max(1, st["rollouts"])
    print(json.dumps({
        "recorded_s": args.duration, "record_wall_s": round(record_s, 1), "fit_wall_s": round(st["wall_time_s"], 1),
        "target_fit_wall_s": 300, "converged": st["converged"], "iterations": st["iterations"],
        "rollouts": st["rollouts"], "rollout_steps": st["rollout_steps"], "free_parameters": st["free_parameters"],
        "rollout_wall_s": round(st["rollout_time_s"], 1),
        "stages": [{"name": s["name"], "free_parameters": s["free_parameters"], "replayed_s": round(s["replayed_s"], 1),
                    "iterations": s["iterations"], "rollouts": s["rollouts"], "wall_s": round(s["wall_time_s"], 1),
                    "converged": s["converged"]} for s in st["stages"]],
        "fit_rollouts_per_s": round(st["rollouts"] / st["wall_time_s"], 2),
        "fit_steps_per_rollout": round(steps_per_rollout),
        "bare_rollouts_per_s": round(bare_rps, 2), "bare_steps_per_rollout": bare_steps,
        "bare_rollouts_per_s_at_fit_length": round(bare_rps * bare_steps / max(1.0, steps_per_rollout), 2),
        "heldout_position_rmse_before_mrad": np.round(before * 1e3, 4).tolist(),
        "heldout_position_rmse_after_mrad": np.round(after * 1e3, 4).tolist(),
        "heldout_rmse_ratio_min": round(float(np.min(before / after)), 2),
        "optimizer": st.get("optimizer", ""), "cpus": os.cpu_count(), "loadavg_1min_start": load_start,
        "loadavg_1min_end": os.getloadavg()[0], "parameters": rows}))


if __name__ == "__main__":
    main()
