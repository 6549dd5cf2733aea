"""What the policy node's per-cycle record adds to a cycle (issue 13): filling the preallocated
:class:`~simreal_ros.policy.record.RecordBuffer` from a real executor cycle, copying it into the
preallocated ``Float64MultiArray`` and serializing it (what ``publish`` hands the middleware),
against the node's existing per-cycle message work in the same run: building and serializing
the proposed command (``array_msg`` + serialize), and the executor cycle itself.

Shipped push bundle (38 -> ... -> 2), thread CPU time per call, interleaved blocks. Needs rclpy
(serialization works without ``rclpy.init``). Prints one JSON object as its last line.
"""

from __future__ import annotations

import json
import time

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from simreal_ros.nodes.common import array_msg, doubles
from simreal_ros.policy.bundle import load_bundle
from simreal_ros.policy.executor import SKIP_REASONS, PolicyExecutor
from simreal_ros.policy.record import RecordBuffer
from simreal_ros.resources import resource
from simreal_ros.robot import load_robot
from simreal_ros.sim.push_env import PushEnv

BLOCKS, PER_BLOCK = 10, 200


def main() -> None:
    robot = load_robot()
    bundle = load_bundle(resource("policies", "push_default"), robot)
    ex = PolicyExecutor(bundle, robot)
    env = PushEnv()
    env.reset(seed=0)
    m = env.measurement
    ex.set_goal(env.goal_point)
    ex.update_object(env.tracked.position, 0.0)
    rec = RecordBuffer(bundle.manifest.obs_dim, bundle.manifest.action_dim, SKIP_REASONS)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=n, size=k, stride=o) for n, k, o in rec.fields]
    times = {"executor_cycle": [], "command_msg": [], "record_msg": []}
    now = 0.0
    for _ in range(BLOCKS):
        for _ in range(PER_BLOCK):
            now += 0.1
            ex.update_state(m.position, m.velocity, now)
            ex.update_object(env.tracked.position, now)
            t0 = time.thread_time_ns()
            res = ex.step(now)
            t1 = time.thread_time_ns()
            serialize_message(array_msg(res.command, label=res.command_type))
            t2 = time.thread_time_ns()
            msg.data = doubles(rec.fill(res, ex.state_stamp, ex.object_stamp))
            serialize_message(msg)
            t3 = time.thread_time_ns()
            times["executor_cycle"].append(t1 - t0)
            times["command_msg"].append(t2 - t1)
            times["record_msg"].append(t3 - t2)
    out = {}
    for k, v in times.items():
        a = np.asarray(v) * 1e-3
        out[f"{k}_cpu_p50_us"] = round(float(np.percentile(a, 50)), 2)
        out[f"{k}_cpu_p99_us"] = round(float(np.percentile(a, 99)), 2)
    out["record_over_command_p50"] = round(out["record_msg_cpu_p50_us"] / out["command_msg_cpu_p50_us"], 2)
    out["record_share_of_cycle_p50"] = round(out["record_msg_cpu_p50_us"] / (
        out["executor_cycle_cpu_p50_us"] + out["command_msg_cpu_p50_us"]), 3)
    out["record_bytes"] = len(serialize_message(msg))
    out["samples"] = BLOCKS * PER_BLOCK
    print(json.dumps(out))


if __name__ == "__main__":
    main()
