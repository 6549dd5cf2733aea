"""Bag writer benchmark: throughput vs the bare rosbags writer, and what a SIGKILL loses.

1. Write the same 100k JointState messages (356-byte CDR) with :class:`BagWriter` (default
   settings: 1 s / 512 KiB flushes with fsync, zstd chunks, status messages) and with the bare
   ``rosbags.rosbag2.Writer`` (MCAP storage) in the same run; report messages per second.
2. Run a writer child at 1 kHz with the default 1 s flush interval, SIGKILL it after a while,
   run the recovery and report how many messages (and ms of data) were lost.

Usage: ``python bench/bench_bag.py [--messages N]``. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from simreal_ros.bag import BagWriter, recover

JS = "sensor_msgs/msg/JointState"
TS = get_typestore(Stores.ROS2_KILTED)


def payloads(n: int) -> list[bytes]:
    T = TS.types
    names = [f"panda_joint{k}" for k in range(1, 8)]
    out = []
    for i in range(n):
        msg = T[JS](header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=i // 1000, nanosec=(i % 1000) * 1_000_000), frame_id=""), name=names,
            position=np.full(7, float(i)), velocity=np.zeros(7), effort=np.zeros(7))
        out.append(bytes(TS.serialize_cdr(msg, JS)))
    return out


def bench_ours(path: Path, data: list[bytes]) -> float:
    t0 = time.perf_counter()
    with BagWriter(path) as w:
        w.add_topic("/joint_states", JS)
        for i, d in enumerate(data):
            w.write("/joint_states", d, 1_000_000_000 + i * 1_000_000)
            if i % 100 == 0:
                w.tick()
    return len(data) / (time.perf_counter() - t0)


def bench_rosbags(path: Path, data: list[bytes]) -> float:
    t0 = time.perf_counter()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/joint_states", JS, typestore=TS)
        for i, d in enumerate(data):
            w.write(conn, 1_000_000_000 + i * 1_000_000, d)
    return len(data) / (time.perf_counter() - t0)


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rosbags.typesys import Stores, get_typestore
    from simreal_ros.bag import BagWriter
    ts = get_typestore(Stores.ROS2_KILTED); T = ts.types
    w = BagWriter(sys.argv[1])  # defaults: 1 s flush interval
    w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    i, t0 = 0, time.monotonic()
    while True:
        m = T["sensor_msgs/msg/JointState"](header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""), name=["j"],
            position=np.array([float(i)]), velocity=np.zeros(1), effort=np.zeros(1))
        now = time.time_ns()
        w.write("/joint_states", ts.serialize_cdr(m, "sensor_msgs/msg/JointState"), now)
        print(i, now, flush=True)
        i += 1
        w.tick()
        time.sleep(max(0.0, t0 + i * 0.001 - time.monotonic()))
""")


def crash_loss(tmp: Path, run_s: float) -> tuple[int, int, float]:
    bag = tmp / "crash"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(bag)], stdout=subprocess.PIPE, text=True)
    last = [(-1, 0)]

    def reader() -> None:
        for line in child.stdout:
            i, t = line.split()
            last[0] = (int(i), int(t))

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(run_s)
    child.send_signal(signal.SIGKILL)
    child.wait()
    th.join(5)
    recover(bag)
    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == "/joint_states"]
        times = [t for _c, t, _d in r.messages(connections=conns)]
    sent, t_sent = last[0][0] + 1, last[0][1]
    return sent, len(times), (t_sent - max(times)) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--crash-after", type=float, default=3.4, help="s the crash child runs before SIGKILL")
    args = ap.parse_args()
    data = payloads(args.messages)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ours = bench_ours(tmp / "ours", data)
        bare = bench_rosbags(tmp / "bare", data)
        sent, recovered, lost_ms = crash_loss(tmp, args.crash_after)
    lost = sent - recovered
    print(f"BagWriter {ours:,.0f} msg/s, bare rosbags Writer {bare:,.0f} msg/s; crash at 1 kHz: sent {sent}, "
          f"recovered {recovered}, lost {lost} ({lost_ms:.0f} ms of data)")
    print(json.dumps({"bagwriter_msgs_per_s": round(ours), "rosbags_writer_msgs_per_s": round(bare),
                      "ratio_vs_rosbags": round(ours / bare, 3), "crash_sent_msgs": sent,
                      "crash_lost_msgs": lost, "crash_lost_ms": round(lost_ms, 1), "flush_interval_ms": 1000}))


if __name__ == "__main__":
    main()
