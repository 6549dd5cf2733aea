"""State-to-command latency and CPU of the node graph: today's timer-driven graph against the
event-driven one, each as one process per node and composed in one process.

Runs ``state_estimator -> policy_executor -> safety_shield`` (the NodeSpecs of ``build_graph``,
without the sim bridge, recorder and baseline) at rate R = 100 Hz and then higher rates until
R is not sustainable, in two variants (:data:`VARIANTS`): ``timer`` (the policy on a
free-running timer, rclpy's SingleThreadedExecutor in every node: the graph before issue 10)
and ``event`` (the policy steps on each new estimate when a cycle is due, the EventsExecutor:
the default graph), each as separate processes (:class:`ProcessGraph`) and composed on one
executor (:class:`InProcessGraph`); all four are interleaved per rate so they see the same
machine load, and the summary gives the ratios timer / event. First, the estimator alone is
measured on a ``--estimator-rate`` (1 kHz) joint-state stream in both variants: the share of
the samples it filtered and its CPU per sample. This process is the arm's driver: a thread publishes ``sensor_msgs/JointState``
on ``/joint_states`` (robot joint names, a slow 0.5 Hz sinusoid of 0.5 mrad around the ready
pose with its velocities, efforts), each stamped with the ROS clock just before publication,
and a ``/simreal/goal`` PointStamped twice a second (the policy's goal subscription is reliable
and volatile, so it is republished); its own Context and executor thread receive the estimate,
the policy's proposals, the sent commands and ``/diagnostics``.

Method (every timestamp is the machine's system clock)
-------------------------------------------------------
* Causal marker. The bundle is a random 256x256 MLP (``write_random_bundle``: real ONNX
  inference every cycle) with ``joint_position_delta`` actions at ``control_rate_hz = R`` and
  ``action.scale = 1e-9``: each proposal is ``q_estimate + 1e-9 * a`` (``|a| <= 1``), i.e. it
  *carries the estimate it was computed from* to 1e-9 rad, while consecutive estimates differ
  by > 1e-6 rad. Each proposal is matched to the unique received estimate within 1.5e-9 rad;
  the estimator keeps the measurement stamp (``latency: 0``), so this names the driver sample
  behind every proposal. Each proposal is then matched to the first sent command written after
  it that passes at least one joint through unchanged (to 1e-10 rad: the shield steps on each
  proposal's arrival; a joint it limits differs, the others are passed through). Sent commands
  with no such joint (every joint limited, or a watchdog-timer step) are not in the latency
  figures; ``sent_matched_frac`` and ``sent_unchanged_frac`` (no joint limited) say how many.
* DDS timestamps. Subscriptions take rclpy's ``MessageInfo``: ``source_timestamp`` (when the
  node wrote the message) and ``received_timestamp`` (when DDS delivered it to this process,
  before the probe's executor runs the callback), so the probe's own Python dispatch is not
  counted. ``e2e`` = the sent command's ``received_timestamp`` at the driver - the stamp of the
  JointState it was computed from; it is the sum of the hops ``state_to_estimate`` (driver ->
  estimator, filter, estimate written), ``estimate_to_proposal`` (estimate -> policy, *waiting
  for the policy's free-running timer tick*, observation + model, proposal written),
  ``proposal_to_sent`` (proposal -> shield, filter step, command written) and ``delivery``
  (sent command -> driver). ``fixed_hops`` = e2e - estimate_to_proposal: the transport and
  processing that does not depend on the timer phase -- the clearest view of what composition
  changes (it leaves out the estimate -> policy transport and the policy's compute).
* Timer phase (``timer`` variant). The policy's timer (steady clock) is not synchronised with
  the driver, so a measurement waits between 0 and one period for the next tick: that wait is
  in e2e (it is what the arm sees) and makes e2e an upper bound of the pipeline's own latency.
  In the ``event`` variant the cycle starts on the estimate's arrival and the wait is gone. With equal
  rates the phase would be frozen at a random value for a whole run; the driver therefore
  publishes at R + 2/window Hz, so the phase sweeps twice through the period during every
  window and e2e is averaged over phases (p50 ~ pipeline + T/2).
* Check: the policy's own ``/diagnostics`` values (``state_age_p50/p99_ms``: tick time - stamp
  of the state used; ``compute_p99_ms``) over its last 1000 cycles.
* Sustainable: over the window (after a warm-up) sent commands arrive at >= 95% of R, the
  policy's timer ran >= 95% of R cycles and it skipped < 5% of them (its diagnostics counters),
  and the shield still forwards the policy without a fault at the end of the window. A rate
  that fails is measured once more (``--retries``; other users' load comes in bursts) and the
  last attempt is reported (``*_attempts``); the escalation stops at the first rate that fails.
* Repeats (``--repeat N``): every configuration of a rate is measured N times, the rounds
  interleaved, and each figure reported is the median over the N measurements (a rate is
  sustainable when most of them were): this machine is a VM whose neighbours come and go, and
  one 4 s window's p99 (its 4th-worst sample at 100 Hz) moves by 2x between runs.
  CPU per node (``/proc``; ``cpu_ms_per_cycle`` = CPU time / (R x window)) and the 1-minute load
  average are reported: on a shared 2-core machine a composed graph is one thread and gets one
  thread's share of the cores, so its sustainable rate depends on the machine's load.

The composed graph runs by default in a child process (this script with ``--host-inproc``), so
the Python driver does not share the stack's interpreter lock; ``--inproc-host self`` puts the
stack on a thread of this process next to the driver instead (GIL contention included; the
driver's hops then stay inside one process, and its CPU figure includes the driver). Overrides (NodeSpec parameters, nodes unchanged):
shield ``control_period = 1/R``, ``revert_fraction = 1`` (the automatic revert hands the arm to
the baseline, which is not running: in ``active`` mode the shield needs only the policy),
``diagnostics_period = 0.5``; policy ``bundle``, ``ood_revert: false`` and ``drift_revert: false``
(a random policy has no training distribution and makes no progress to a goal),
``diagnostics_period = 0.5``.

Run (as root; DDS in a loopback-only network namespace)::

    unshare -n sh -c 'ip link set lo up && exec python bench/bench_graph_latency.py'

Options: ``--rates 100 200 500 1000 --warmup 2 --window 4 --variants timer event --modes proc
inproc --estimator-rate 1000``. Prints one row per
configuration (and its full figures as JSON) and, as the LAST line, one JSON object with
unit-suffixed keys. About 10 s per configuration, ~4-6 min in all.
"""

from __future__ import annotations

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before anything imports rclpy
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 200 + 1))

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

MARKER_SCALE = 1e-9  # action.scale: proposal = estimate + MARKER_SCALE * clip(a, +-1)
MATCH_TOL = 1.5 * MARKER_SCALE
SENT_TOL = 1e-10  # rad: "passed through unchanged" (robust to rounding; samples differ by > 1e-6)
SUSTAIN_RATE, SUSTAIN_SKIP = 0.95, 0.05
NODES_WITH_COUNTERS = ("policy_executor", "safety_shield", "state_estimator")
HOPS = ("state_to_estimate", "estimate_to_proposal", "proposal_to_sent", "delivery", "fixed_hops", "e2e")


# ---------------------------------------------------------------------- ROS-free analysis
def pct(values, q: float) -> float | None:
    v = np.asarray(values, dtype=float)
    return float(np.percentile(v, q)) if v.size else None


def nearest_rows(table: np.ndarray, rows: np.ndarray, tol: float) -> np.ndarray:
    """Index of the unique ``table`` row within ``tol`` (max-abs) of each of ``rows``; -1 if none or ambiguous."""
    out = np.full(len(rows), -1)
    if not len(table):
        return out
    for i, r in enumerate(rows):
        d = np.abs(table - r).max(axis=1)
        hits = np.flatnonzero(d <= tol)
        if len(hits) == 1:
            out[i] = hits[0]
    return out


def first_equal_after(prop_src: np.ndarray, prop_q: np.ndarray, sent_src: np.ndarray, sent_q: np.ndarray,
                      tol: float) -> tuple[np.ndarray, np.ndarray]:
    """For each proposal, the first sent command written after it that passes at least one joint of it
    through unchanged (-1 if none), and whether it passes all joints (no intervention)."""
    out, exact = np.full(len(prop_src), -1), np.zeros(len(prop_src), dtype=bool)
    for i, (t, q) in enumerate(zip(prop_src, prop_q)):
        cand = np.flatnonzero(sent_src > t)[:64]  # the shield steps on arrival: its answer is among the next few
        if not len(cand):
            continue
        same = np.abs(sent_q[cand] - q) <= tol
        hit = np.flatnonzero(same.any(axis=1))
        if len(hit):
            out[i], exact[i] = cand[hit[0]], same[hit[0]].all()
    return out, exact


def analyse(est: list, prop: list, sent: list) -> dict:
    """Latency hops (ms) from the window's records (tuples of ns timestamps and joint values).

    ``est``: (stamp, src, recv, q...); ``prop`` and ``sent``: (src, recv, q...).
    """
    out: dict = {"proposals": len(prop), "sent": len(sent), "matched": 0, "proposals_matched_frac": 0.0,
                 "sent_matched_frac": 0.0}
    if not (est and prop and sent):
        return out
    E, P, S = (np.asarray(x, dtype=float) for x in (est, prop, sent))
    pi = nearest_rows(E[:, 3:], P[:, 2:], MATCH_TOL)
    si, exact = first_equal_after(P[:, 0], P[:, 2:], S[:, 0], S[:, 2:], SENT_TOL)
    ok = (pi >= 0) & (si >= 0)
    # one sent command per proposal (a repeated identical proposal maps to the same sent: keep the first)
    _, first = np.unique(si[ok], return_index=True)
    idx = np.flatnonzero(ok)[first]
    e, p, s = E[pi[idx]], P[idx], S[si[idx]]
    ms = 1e-6
    hops = {
        "state_to_estimate": (e[:, 1] - e[:, 0]) * ms,
        "estimate_to_proposal": (p[:, 0] - e[:, 1]) * ms,
        "proposal_to_sent": (s[:, 0] - p[:, 0]) * ms,
        "delivery": (s[:, 1] - s[:, 0]) * ms,
        "e2e": (s[:, 1] - e[:, 0]) * ms,
    }
    hops["fixed_hops"] = hops["e2e"] - hops["estimate_to_proposal"]
    out.update(matched=len(idx), proposals_matched_frac=float((pi >= 0).mean()), sent_matched_frac=len(idx) / len(S),
               sent_unchanged_frac=float(exact[idx].sum()) / len(S))
    for k, v in hops.items():
        out[f"{k}_p50_ms"], out[f"{k}_p99_ms"] = pct(v, 50), pct(v, 99)
    return out


def sustainable(r: dict, rate: float) -> bool:
    """Sent commands and policy cycles (timer ticks that ran) at >= 95% of R, < 5% of cycles skipped,
    and the shield still forwarding the policy (no fault) at the end of the window."""
    return (r.get("sent_rate_hz", 0.0) >= SUSTAIN_RATE * rate and r.get("policy_cycle_rate_hz", 0.0)
            >= SUSTAIN_RATE * rate and r.get("policy_skipped_frac", 1.0) < SUSTAIN_SKIP
            and r.get("shield_forwarding_policy", False))


# ---------------------------------------------------------------------- the driver probe
class Probe:
    """The arm's driver and the measuring subscriptions, in their own rclpy Context."""

    def __init__(self, robot, rate_hz: float, amplitude: float) -> None:
        """``rate_hz``: the driver's publication rate."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PointStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.rclpy, self.JointState, self.PointStamped = rclpy, JointState, PointStamped
        self.robot, self.rate, self.amplitude = robot, rate_hz, amplitude
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node("bench_driver", context=self.context)
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        deep = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", rel)
        # the policy subscribes the goal with QoSProfile(depth=1): reliable, volatile -> republished
        self.goal_pub = self.node.create_publisher(PointStamped, "/simreal/goal", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.recording = False
        self.t0 = time.time_ns()  # records hold ns since t0: exact as float64 (epoch ns are not)
        self.est: list = []
        self.prop: list = []
        self.sent: list = []
        self.diag: list = []  # (recv_s, node, {key: value})
        self.published = 0
        self.sent_total = 0
        self.est_total = 0
        self.node.create_subscription(JointState, "/simreal/state_estimate", self._on_est, deep)
        self.node.create_subscription(Float64MultiArray, "/simreal/policy/command", self._on_prop, deep)
        self.node.create_subscription(Float64MultiArray, "/forward_position_controller/commands", self._on_sent,
                                      deep)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, deep)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._spin, name="probe-spin", daemon=True),
                         threading.Thread(target=self._drive, name="probe-driver", daemon=True)]
        self.goal = robot.fk(robot.ready_pose)[:3, 3] + np.array([0.05, 0.05, -0.05])

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def _drive(self) -> None:
        n = self.robot.n_joints
        ready = np.asarray(self.robot.ready_pose, dtype=float)
        phase = np.arange(n) * np.pi / n  # never all joints at rest at once
        w = 2 * np.pi * 0.5
        names = list(self.robot.joint_names)
        period = 1.0 / self.rate
        t0 = time.monotonic()
        k, next_goal = 0, 0.0
        clock = self.node.get_clock()
        while not self._stop.is_set():
            k += 1
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # fell behind by more than a period: drop the lost ticks, keep pace
                k = int((time.monotonic() - t0) / period)
            now = clock.now()
            t = k * period
            msg = self.JointState()
            msg.header.stamp = now.to_msg()
            msg.name = names
            msg.position = (ready + self.amplitude * np.sin(w * t + phase)).tolist()
            msg.velocity = (self.amplitude * w * np.cos(w * t + phase)).tolist()
            msg.effort = (2.0 * np.sin(w * t + phase)).tolist()
            self.js_pub.publish(msg)
            self.published += 1
            if t >= next_goal:
                g = self.PointStamped()
                g.header.stamp, g.header.frame_id = msg.header.stamp, "base"
                g.point.x, g.point.y, g.point.z = (float(v) for v in self.goal)
                self.goal_pub.publish(g)
                next_goal = t + 0.5

    def _on_est(self, msg, info) -> None:
        self.est_total += 1
        if self.recording:
            st, t0 = msg.header.stamp, self.t0
            self.est.append((st.sec * 1_000_000_000 + st.nanosec - t0, info["source_timestamp"] - t0,
                             info["received_timestamp"] - t0, *msg.position))

    def _on_prop(self, msg, info) -> None:
        if self.recording:
            self.prop.append((info["source_timestamp"] - self.t0, info["received_timestamp"] - self.t0, *msg.data))

    def _on_sent(self, msg, info) -> None:
        self.sent_total += 1
        if self.recording:
            self.sent.append((info["source_timestamp"] - self.t0, info["received_timestamp"] - self.t0, *msg.data))

    def _on_diag(self, msg) -> None:
        t = time.time()
        for s in msg.status:
            self.diag.append((t, s.name.split(":")[0], {"_message": s.message, **{kv.key: kv.value for kv in s.values}}))

    def last_diag(self, node: str, after: float = -np.inf) -> tuple[float, dict] | None:
        for t, name, values in self.diag:
            if name == node and t >= after:
                return t, values
        return None

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


# ---------------------------------------------------------------------- one configuration
#: the graph's cycle settings compared in every run: today's free-running policy timer on rclpy's
#: SingleThreadedExecutor, and the policy stepping on each new estimate on the EventsExecutor
VARIANTS = {"timer": {"trigger": "timer", "executor": "single_threaded"},
            "event": {"trigger": "estimate", "executor": "events"}}


def bench_specs(rate: float, bundle: Path, variant: str = "event") -> list:
    """The graph's estimator, policy and shield with this bench's overrides (see the docstring)."""
    from simreal_ros.bringup.graph import GraphOptions, build_graph

    keep = {
        "state_estimator": {},
        "policy_executor": {"bundle": str(bundle), "ood_revert": False, "drift_revert": False,
                            "diagnostics_period": 0.5},
        "safety_shield": {"control_period": 1.0 / rate, "revert_fraction": 1.0, "mode": "active",
                          "diagnostics_period": 0.5},
    }
    try:
        opts = GraphOptions(mode="sim", timing="paced", record=False, **VARIANTS[variant])
    except TypeError:  # a --baseline-tree from before the trigger/executor options: its graph is "timer"
        opts = GraphOptions(mode="sim", timing="paced", record=False)
    specs = build_graph(opts)
    # every variant at the niceness of the old graph (0): what is compared is the software, not the
    # scheduling priority the default graph also asks for (graph.URGENT_NICE)
    return [replace(s, parameters={**s.parameters, **keep[s.name], "nice": 0}) for s in specs if s.name in keep]


class InProcessHost:
    """The composed graph (:class:`InProcessGraph`) hosted in a child process running this script
    with ``--host-inproc``, so the driver probe does not share the stack's interpreter (GIL)."""

    def __init__(self, rate: float, bundle: Path, run_dir: Path, variant: str) -> None:
        self.cmd = [sys.executable, str(Path(__file__).resolve()), "--host-inproc", "--rates", str(rate),
                    "--bundle", str(bundle), "--run-dir", str(run_dir), "--variant", variant]
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "inproc.log", "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def failed(self) -> dict[str, int]:
        return {"inproc": self.proc.returncode} if self.proc and self.proc.poll() is not None else {}

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def host_inproc(rate: float, bundle: Path, run_dir: Path, variant: str) -> int:
    """Child side of :class:`InProcessHost`: run the composed graph until SIGINT/SIGTERM or the parent dies."""
    from simreal_ros.bringup.runner import InProcessGraph

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    graph = InProcessGraph(bench_specs(rate, bundle, variant), run_dir)
    try:
        graph.start()
        while not stop.wait(0.2) and os.getppid() == parent:
            pass
    finally:
        graph.stop()
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def graph_pids(graph) -> dict[str, int]:
    if isinstance(getattr(graph, "procs", None), dict):
        return {name: p.pid for name, p in graph.procs.items()}
    if getattr(graph, "proc", None) is not None:
        return {"inproc": graph.proc.pid}
    return {"inproc_with_probe": os.getpid()}


def _counter(values: dict, key: str) -> int:
    return int(float(values.get(key, 0)))


def run_config(mode: str, rate: float, robot, tmp: Path, args, variant: str = "event") -> dict:
    from simreal_ros.bringup.runner import InProcessGraph, ProcessGraph
    from simreal_ros.policy.export import write_random_bundle

    run_dir = tmp / f"{variant}_{mode}_{rate:g}"
    bundle = tmp / f"bundle_{rate:g}"
    if not (bundle / "manifest.yaml").exists():
        write_random_bundle(bundle, robot, hidden=(256, 256), name="bench_marker", control_rate_hz=float(rate),
                            action_scale=MARKER_SCALE)
    specs = bench_specs(rate, bundle, variant)
    graph = probe = None
    env = dict(os.environ)
    if variant == "timer" and args.baseline_tree:  # today's graph from its own source tree
        os.environ["PYTHONPATH"] = str(args.baseline_tree)
    try:
        if mode == "proc":
            graph = ProcessGraph(specs, run_dir)
        elif args.inproc_host == "child":
            graph = InProcessHost(rate, bundle, run_dir, variant)
        else:  # the stack on a thread of this process, next to the probe (they share the GIL)
            graph = InProcessGraph(specs, run_dir)
        graph.start()
        os.environ.clear()
        os.environ.update(env)
        probe = Probe(robot, rate + 2.0 / args.window, args.amplitude)  # two phase sweeps per window
        probe.start()
        deadline = time.monotonic() + args.start_timeout
        while probe.sent_total < rate:  # a second's worth of sent commands: the whole chain runs
            failed = graph.failed() if hasattr(graph, "failed") else {}
            if failed or time.monotonic() > deadline:
                logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                               for p in sorted(run_dir.glob("*.log")))
                raise RuntimeError(f"{mode} {rate:g} Hz: no command flow (exited: {failed}){logs}")
            time.sleep(0.1)
        time.sleep(args.warmup)
        probe.est.clear(), probe.prop.clear(), probe.sent.clear()
        pids = {**graph_pids(graph), "probe": os.getpid()}
        cpu0 = {n: cpu_seconds(pid) for n, pid in pids.items()}
        pub0, w0 = probe.published, time.time()
        probe.recording = True
        time.sleep(args.window)
        probe.recording = False
        w1, pub1 = time.time(), probe.published
        cpu1 = {n: cpu_seconds(pid) for n, pid in pids.items()}
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end and not all(probe.last_diag(n, after=w1) for n in NODES_WITH_COUNTERS):
            time.sleep(0.05)
        est, prop, sent, t0 = list(probe.est), list(probe.prop), list(probe.sent), probe.t0
        d0, d1 = probe.last_diag("policy_executor", after=w0), probe.last_diag("policy_executor", after=w1)
        s0, s1 = probe.last_diag("safety_shield", after=w0), probe.last_diag("safety_shield", after=w1)
        e0, e1 = probe.last_diag("state_estimator", after=w0), probe.last_diag("state_estimator", after=w1)
        failed = graph.failed() if hasattr(graph, "failed") else {}
    finally:
        os.environ.clear()
        os.environ.update(env)
        if probe is not None:
            probe.stop()
        if graph is not None:
            graph.stop()
    if failed:
        raise RuntimeError(f"{mode} {rate:g} Hz: node(s) exited during the run: {failed}")
    span = w1 - w0
    r = analyse(est, prop, sent)
    r["driver_rate_hz"] = (pub1 - pub0) / span
    r["sent_rate_hz"] = sum(1 for s in sent if w0 * 1e9 <= s[1] + t0 <= w1 * 1e9) / span
    r["proposal_rate_hz"] = len(prop) / span
    r["cpu_pct"] = {n: round(100 * (cpu1[n] - cpu0[n]) / span, 1) for n in pids}
    r["cpu_ms_per_cycle"] = {n: round(1e3 * (cpu1[n] - cpu0[n]) / (span * rate), 3) for n in pids}
    r["loadavg_1min"] = os.getloadavg()[0]
    if d0 and d1:
        cycles = _counter(d1[1], "cycles") - _counter(d0[1], "cycles")
        skipped = _counter(d1[1], "skipped") - _counter(d0[1], "skipped")
        r["policy_skipped_frac"] = skipped / cycles if cycles else 1.0
        r["policy_skipped_by_reason"] = {k[8:]: n for k in d1[1] if k.startswith("skipped_")
                                         if (n := _counter(d1[1], k) - _counter(d0[1], k))}
        r["policy_cycle_rate_hz"] = cycles / (d1[0] - d0[0])
        for k in ("state_age_p50_ms", "state_age_p99_ms", "compute_p99_ms"):
            if k in d1[1]:
                r[f"policy_{k}"] = float(d1[1][k])
    if e0 and e1:  # the share of the driver's samples the estimator filtered (its diagnostics' times)
        r["estimator_input_frac"] = ((_counter(e1[1], "accepted") - _counter(e0[1], "accepted"))
                                     / (r["driver_rate_hz"] * (e1[0] - e0[0])))
    if s0 and s1:
        r["shield_steps"] = _counter(s1[1], "steps") - _counter(s0[1], "steps")
        r["shield_interventions"] = _counter(s1[1], "interventions") - _counter(s0[1], "interventions")
        r["shield_status"] = f"{s1[1].get('_message')} (mode {s1[1].get('mode')}, source {s1[1].get('source')})"
        r["shield_forwarding_policy"] = s1[1].get("source") == "policy" and not s1[1].get("fault")
    r["sustainable"] = sustainable(r, rate)
    return r


def run_estimator(variant: str, rate: float, robot, tmp: Path, args, max_estimate_rate_hz: float = 0.0) -> dict:
    """The estimator alone on a ``rate`` Hz joint-state stream: the share of the samples it
    filtered (its ``accepted`` counter / the driver's publications) and its CPU per sample;
    ``max_estimate_rate_hz`` > 0 publishes at most that many estimates per second."""
    from simreal_ros.bringup.runner import ProcessGraph

    spec = next(s for s in bench_specs(rate, tmp / "unused", variant) if s.name == "state_estimator")
    extra = {"max_estimate_rate_hz": max_estimate_rate_hz} if max_estimate_rate_hz else {}
    spec = replace(spec, parameters={**spec.parameters, "diagnostics_period": 0.5, **extra})
    graph, probe = ProcessGraph([spec], tmp / f"estimator_{variant}_{rate:g}_{max_estimate_rate_hz:g}"), None
    env = dict(os.environ)
    if variant == "timer" and args.baseline_tree:
        os.environ["PYTHONPATH"] = str(args.baseline_tree)
    try:
        graph.start()
        os.environ.clear()
        os.environ.update(env)
        probe = Probe(robot, rate, args.amplitude)
        probe.start()
        deadline = time.monotonic() + args.start_timeout
        while probe.est_total < rate and time.monotonic() < deadline and not graph.failed():
            time.sleep(0.1)
        time.sleep(args.warmup)
        pid = graph.procs["state_estimator"].pid
        d0, after = None, time.time()
        while d0 is None and time.monotonic() < deadline + 5:
            d0 = probe.last_diag("state_estimator", after=after)
            time.sleep(0.02)
        pub0, cpu0 = probe.published, cpu_seconds(pid)
        time.sleep(args.window)
        w1 = time.time()
        pub1, cpu1 = probe.published, cpu_seconds(pid)
        d1 = None
        while d1 is None and time.time() < w1 + 2.0:
            d1 = probe.last_diag("state_estimator", after=w1)
            time.sleep(0.02)
    finally:
        os.environ.clear()
        os.environ.update(env)
        if probe is not None:
            probe.stop()
        graph.stop()
    if not (d0 and d1):
        return {"error": "no estimator diagnostics"}
    span = d1[0] - d0[0]
    accepted = _counter(d1[1], "accepted") - _counter(d0[1], "accepted")
    input_rate = (pub1 - pub0) / args.window  # what the driver achieved (it drops ticks it fell behind on)
    return {"input_rate_hz": round(input_rate, 1), "accepted_frac": accepted / (input_rate * span),
            "cpu_pct": round(100 * (cpu1 - cpu0) / args.window, 1),
            "cpu_ms_per_sample": round(1e3 * (cpu1 - cpu0) / max(pub1 - pub0, 1), 4)}


def summary(results: dict, base_rate: float) -> dict:
    """The flat, unit-suffixed JSON keys: every hop at the first rate, e2e and fixed hops at all;
    then the event-driven graph against today's timer-driven one (ratios old / new)."""
    out: dict = {}
    for (variant, mode, rate), r in results.items():
        key = f"{variant}_{mode}_{rate:g}hz"
        for h in HOPS if rate == base_rate else ("fixed_hops", "e2e"):
            for q in ("p50", "p99"):
                v = r.get(f"{h}_{q}_ms")
                out[f"{key}_{h}_{q}_ms"] = None if v is None else round(v, 3)
        if rate == base_rate:
            for k in ("policy_state_age_p50_ms", "policy_state_age_p99_ms", "policy_compute_p99_ms"):
                out[f"{key}_{k}"] = r.get(k)
        out[f"{key}_sent_rate_hz"] = round(r.get("sent_rate_hz", 0.0), 1)
        out[f"{key}_policy_skipped_pct"] = round(100 * r.get("policy_skipped_frac", 1.0), 2)
        out[f"{key}_sent_matched_pct"] = round(100 * r.get("sent_matched_frac", 0.0), 1)
        out[f"{key}_estimator_input_pct"] = round(100 * r["estimator_input_frac"], 1) \
            if "estimator_input_frac" in r else None
        cpu = r.get("cpu_ms_per_cycle", {})
        out[f"{key}_stack_cpu_ms_per_cycle"] = round(sum(v for n, v in cpu.items() if n != "probe"), 3) if cpu \
            else None
        if rate == base_rate and mode == "proc":
            for n, v in cpu.items():
                if n != "probe":
                    out[f"{key}_{n}_cpu_ms_per_cycle"] = v
        out[f"{key}_sustainable"] = bool(r.get("sustainable"))
        out[f"{key}_attempts"] = r.get("attempt", 1)

    def ratio(a, b):
        return round(a / b, 2) if a and b else None

    base = f"{base_rate:g}hz"
    for mode in ("proc", "inproc"):
        old, new = results.get(("timer", mode, base_rate), {}), results.get(("event", mode, base_rate), {})
        for h in ("e2e", "fixed_hops", "estimate_to_proposal"):
            for q in ("p50", "p99"):
                out[f"ratio_timer_vs_event_{mode}_{base}_{h}_{q}"] = ratio(old.get(f"{h}_{q}_ms"),
                                                                           new.get(f"{h}_{q}_ms"))
        oc, nc = old.get("cpu_ms_per_cycle", {}), new.get("cpu_ms_per_cycle", {})
        for n in sorted(set(oc) & set(nc) - {"probe"}):
            out[f"ratio_timer_vs_event_{mode}_{base}_{n}_cpu_per_cycle"] = ratio(oc[n], nc[n])
    for variant in VARIANTS:
        a, b = (results.get((variant, m, base_rate), {}).get("e2e_p99_ms") for m in ("proc", "inproc"))
        out[f"ratio_{variant}_proc_vs_inproc_{base}_e2e_p99"] = ratio(a, b)
    return out


def median_result(runs: list[dict]) -> dict:
    """One configuration's figures over repeated measurements: the median of every number (per
    node for the CPU figures), sustainable when most runs were; other values from the last run."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[-1])
    for k, v in runs[-1].items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            out[k] = float(np.median(vals)) if vals else v
        elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
            out[k] = {n: float(np.median([r[k][n] for r in runs if n in r.get(k, {})])) for n in v}
    out["sustainable"] = 2 * sum(bool(r.get("sustainable")) for r in runs) > len(runs)
    out["repeats"] = len(runs)
    return out


def _fmt(v) -> str:
    return "   -  " if v is None else f"{v:6.2f}"


def _print_row(mode: str, rate: float, r: dict) -> None:
    if "e2e_p50_ms" not in r:
        return
    print(f"{mode + ' ' + format(rate, 'g') + ' Hz':>19} {_fmt(r['e2e_p50_ms']):>7} {_fmt(r['e2e_p99_ms'])} | "
          + " ".join(_fmt(r[f"{h}_p50_ms"]) for h in HOPS[:5])
          + f"  | {r['sent_rate_hz']:7.1f} {100 * r.get('policy_skipped_frac', 1):5.1f} "
            f"{100 * r['sent_matched_frac']:6.1f} {r['sustainable']}", flush=True)
    print("      " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 200, 500, 1000],
                    help="policy/driver rates in Hz, increasing (the shield accepts periods >= 1 ms)")
    ap.add_argument("--warmup", type=float, default=2.0, help="s after the first commands, not measured")
    ap.add_argument("--window", type=float, default=4.0, help="s measured per configuration")
    ap.add_argument("--amplitude", type=float, default=0.0005, help="rad, driver's sinusoid around the ready pose")
    ap.add_argument("--retries", type=int, default=1,
                    help="re-measure a rate that was not sustainable this many times (other users' load is bursty)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure every configuration this many times per rate (interleaved) and report medians")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="s to wait for the first commands")
    ap.add_argument("--inproc-host", choices=("child", "self"), default="child",
                    help="composed graph in a child process (default) or on a thread of this process, next to "
                         "the driver probe")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="graph cycle settings to compare (timer: today's; event: state-triggered, EventsExecutor)")
    ap.add_argument("--modes", nargs="+", choices=("proc", "inproc"), default=["proc", "inproc"])
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="run the timer variant's nodes from this source tree (PYTHONPATH), e.g. a worktree of "
                         "the commit before the event-driven graph: exactly today's graph, QoS and conversions "
                         "included (default: this tree with trigger timer + SingleThreadedExecutor)")
    ap.add_argument("--estimator-rate", type=float, default=1000.0,
                    help="Hz of the joint-state stream the estimator alone is measured on first (0: skip)")
    ap.add_argument("--host-inproc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=list(VARIANTS), default="event", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.host_inproc:
        return host_inproc(args.rates[0], args.bundle, args.run_dir, args.variant)
    # SIGINT -> KeyboardInterrupt (even if inherited as ignored), SIGTERM -> SystemExit: the finally
    # blocks then stop every child process
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from simreal_ros.robot import load_robot

    robot = load_robot()
    results: dict[tuple[str, str, float], dict] = {}
    configs = [(v, m) for v in args.variants for m in args.modes]
    alive = dict.fromkeys(configs, True)
    t_start, load0 = time.monotonic(), round(os.getloadavg()[0], 2)
    print(f"{'config':>19} {'e2e p50':>7} {'p99':>6} | {'st>est':>6} {'est>pol':>7} {'pol>sent':>8} "
          f"{'deliv':>6} {'fixed':>6} (p50 ms) | {'sent Hz':>7} {'skip%':>5} {'match%':>6} sustainable", flush=True)
    est: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_graph_") as tmpdir:
        runs = [(v, 0.0) for v in args.variants] + ([("event", 250.0)] if "event" in args.variants else [])
        for variant, max_rate in (runs if args.estimator_rate > 0 else ()):
            name = variant + (f"_estimates_at_most_{max_rate:g}hz" if max_rate else "")
            try:
                est[name] = run_estimator(variant, args.estimator_rate, robot, Path(tmpdir), args, max_rate)
            except Exception as exc:  # report it, keep the rest of the run
                est[name] = {"error": str(exc).splitlines()[0]}
            print(f"estimator alone, {name}, {args.estimator_rate:g} Hz input: {json.dumps(est[name])}", flush=True)
        for rate in args.rates:
            runs: dict[tuple[str, str], list[dict]] = {c: [] for c in configs if alive[c]}
            for _ in range(max(1, args.repeat)):
                for variant, mode in runs:  # interleaved per rate: every configuration sees the same load
                    for attempt in range(1, args.retries + 2):
                        try:
                            r = run_config(mode, rate, robot, Path(tmpdir), args, variant)
                        except Exception as exc:  # a node that fails to start: report it, keep the rest of the run
                            print(f"{variant} {mode} {rate:g} Hz failed: {exc}", file=sys.stderr, flush=True)
                            r = {"sustainable": False, "error": str(exc).splitlines()[0]}
                        r["attempt"] = attempt
                        _print_row(f"{variant} {mode}", rate, r)
                        if r["sustainable"] or "error" in r:
                            break
                    runs[(variant, mode)].append(r)
            for (variant, mode), rs in runs.items():
                results[(variant, mode, rate)] = median_result(rs)
                alive[(variant, mode)] = results[(variant, mode, rate)]["sustainable"]
            if not any(alive.values()):
                break
    out = summary(results, args.rates[0])
    for variant, r in est.items():
        key = f"estimator_only_{variant}_{args.estimator_rate:g}hz"
        out[f"{key}_input_accepted_pct"] = round(100 * r["accepted_frac"], 1) if "accepted_frac" in r else None
        out[f"{key}_cpu_ms_per_sample"] = r.get("cpu_ms_per_sample")
        out[f"{key}_cpu_pct"] = r.get("cpu_pct")
    for variant, mode in configs:
        ok = [rate for rate in args.rates if results.get((variant, mode, rate), {}).get("sustainable")]
        out[f"{variant}_{mode}_max_sustainable_hz"] = round(max(ok)) if ok else 0
    out["loadavg_1min_start"], out["loadavg_1min_end"] = load0, round(os.getloadavg()[0], 2)
    out["total_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children are already stopped (finally blocks)
        sys.exit(130)
