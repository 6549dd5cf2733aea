"""Policy inference latency: the executor's whole cycle (observation building + normalisation +
model + action + OOD monitor) against a bare ONNX Runtime ``session.run`` on the same model
(30 -> 256 -> 256 -> 7 MLP, one observation, one thread), in the same run.

Interleaves the measurements in blocks so both see the same machine noise. Wall-clock
percentiles include preemption by other processes (on a loaded machine the longer executor
cycle is hit more often, which shows at p99); the ``cpu`` figures (thread CPU time) do not. Prints one JSON
object as its last line. Target: executor p99 well under the control period (50 ms at
20 Hz); the ratio to bare ORT shows what the executor adds around the model.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from simreal_ros.policy.bundle import load_bundle
from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
from simreal_ros.policy.export import write_random_bundle
from simreal_ros.robot import load_robot

BLOCKS, PER_BLOCK = 20, 500


def bare_session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def main() -> None:
    robot = load_robot()
    with tempfile.TemporaryDirectory() as tmp:
        bdir = write_random_bundle(Path(tmp) / "bundle", robot, hidden=(256, 256))
        bundle = load_bundle(bdir, robot)
        sess = bare_session(bundle.model_path)
    ex = PolicyExecutor(bundle, robot, ExecutorConfig(compute_deadline=1e9, ood_revert=False))
    rng = np.random.default_rng(0)
    goal = robot.fk(robot.ready_pose)[:3, 3] + np.array([0.05, 0.05, -0.05])
    ex.set_goal(goal)
    obs = rng.standard_normal((PER_BLOCK, bundle.manifest.obs_dim)).astype(np.float32)
    qs = robot.ready_pose + 0.05 * rng.standard_normal((PER_BLOCK, robot.n_joints))
    name_in, name_out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    for i in range(200):  # warm-up both
        sess.run([name_out], {name_in: obs[i % PER_BLOCK][None]})
        ex.update_state(qs[i % PER_BLOCK], np.zeros(7), 0.0)
        ex.step(0.0)
    t_bare, t_exec, t_backend, c_bare, c_exec = [], [], [], [], []
    cpu = time.thread_time
    for _ in range(BLOCKS):
        for i in range(PER_BLOCK):
            x = obs[i][None]
            c0, t0 = cpu(), time.perf_counter()
            sess.run([name_out], {name_in: x})
            t_bare.append(time.perf_counter() - t0)
            c_bare.append(cpu() - c0)
        for i in range(PER_BLOCK):
            x = obs[i]
            t0 = time.perf_counter()
            bundle.backend(x)
            t_backend.append(time.perf_counter() - t0)
        for i in range(PER_BLOCK):
            ex.update_state(qs[i], np.zeros(7), 0.0)
            c0, t0 = cpu(), time.perf_counter()
            res = ex.step(0.0)
            t_exec.append(time.perf_counter() - t0)
            c_exec.append(cpu() - c0)
            if res.command is None:
                raise RuntimeError(f"executor skipped a cycle in the bench: {res.skipped}")

    def pct(ts, q):
        return float(np.percentile(np.asarray(ts) * 1e6, q))

    out = {
        "executor_p50_us": round(pct(t_exec, 50), 1), "executor_p99_us": round(pct(t_exec, 99), 1),
        "backend_p50_us": round(pct(t_backend, 50), 1), "backend_p99_us": round(pct(t_backend, 99), 1),
        "bare_ort_p50_us": round(pct(t_bare, 50), 1), "bare_ort_p99_us": round(pct(t_bare, 99), 1),
        "ratio_p50_vs_bare_ort": round(pct(t_exec, 50) / pct(t_bare, 50), 2),
        "ratio_p99_vs_bare_ort": round(pct(t_exec, 99) / pct(t_bare, 99), 2),
        # CPU time of this thread: what the cycle costs, without preemption by other processes
        "executor_cpu_p99_us": round(pct(c_exec, 99), 1), "bare_ort_cpu_p99_us": round(pct(c_bare, 99), 1),
        "control_period_us": 1e6 / bundle.manifest.control_rate_hz,
        "samples": len(t_exec),
    }
    print(f"executor cycle p50/p99 {out['executor_p50_us']}/{out['executor_p99_us']} us; "
          f"bare ORT {out['bare_ort_p50_us']}/{out['bare_ort_p99_us']} us")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
