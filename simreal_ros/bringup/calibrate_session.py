"""``simreal calibrate record``: run the calibrate graph in simulation and record one session.

The same nodes as ``ros2 launch simreal_ros calibrate.launch.py mode:=sim``
(:func:`~simreal_ros.bringup.graph.build_calibrate_graph`), each in its own process
(:class:`~simreal_ros.bringup.runner.ProcessGraph`, as ``simreal sim`` runs them). A watcher
node waits until the graph is up and recording, follows the excitation controller's phase on
``/diagnostics`` with a progress bar until it says ``finished``, lets the hold be recorded, then
stops the graph (the recorder closes its bag) and reads the bag back.

The excitation starts only once the recorder subscribes to what the fit reads (its ``recorder``
parameter), and the graph is stopped only once the recorder's own counters (its status on
``/diagnostics``) show every proposal of the run and of the hold: on a loaded machine the
recorder subscribed seconds late (bags without the approach) and lagged seconds behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from simreal_ros.bringup.background import BackgroundNode
from simreal_ros.bringup.graph import EXCITATION_NODE, GraphOptions, NodeSpec, shield_config
from simreal_ros.bringup.session import _wait

RECORDER_NODE = "recorder"  # the graph's recorder: its status on /diagnostics counts what it wrote

STARTUP_TIMEOUT_S = 60.0
#: seconds recorded after the excitation said it finished (the hold, at rest)
HOLD_S = 1.0
#: wall seconds the recorder may take to write the end of the run before the recording fails
RECORDER_LAG_S = 30.0
#: wall seconds without a new sent command before the recording is given up as stalled
STALL_S = 20.0


class _Watcher(BackgroundNode):
    """A node in its own context, spun in a background thread: counts and the excitation's phase."""

    def __init__(self, state_topic: str, command_topic: str, sent_topic: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.topics = {"state": state_topic, "command": command_topic, "sent": sent_topic}
        self.counts = {"state": 0, "command": 0, "sent": 0}
        self.phase = ""
        self.proposals = 0  # the excitation's own count of its proposals (its diagnostics)
        self.recorded = -1  # the recorder's count of the proposals it wrote (its diagnostics; -1: none yet)
        self.progress = (0.0, 0.0)  # (elapsed, end) of the excitation, s

        def make(context):  # subscribed before the executor spins
            n = rclpy.create_node("simreal_calibrate_watcher", context=context)
            n.create_subscription(JointState, state_topic, lambda _m: self._count("state"), qos_profile_sensor_data)
            n.create_subscription(Float64MultiArray, command_topic, lambda _m: self._count("command"), 10)
            n.create_subscription(JointState, sent_topic, lambda _m: self._count("sent"), 50)
            n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
            return n

        super().__init__(make)

    def _count(self, key: str) -> None:
        self.counts[key] += 1

    def _on_diagnostics(self, msg) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if st.name == RECORDER_NODE:
                self.recorded = int(values.get(f"{self.topics['command']}.received", self.recorded))
            if st.name != EXCITATION_NODE:
                continue
            self.proposals = int(values.get("commands", self.proposals))
            self.phase = values.get("phase", self.phase)
            try:
                self.progress = (float(values.get("elapsed_s", 0.0)), float(values.get("end_s", 0.0)))
            except ValueError:
                pass

    def recording(self) -> bool:
        """The recorder subscribed to the states, the excitation's proposals and the sent commands
        (subscribers beside this watcher: the estimator and the shield, and the recorder)."""
        n = self.node
        return (n.count_subscribers(self.topics["sent"]) >= 2 and n.count_subscribers(self.topics["state"]) >= 3
                and n.count_subscribers(self.topics["command"]) >= 3)


def record_session(nodes: list[NodeSpec], opts: GraphOptions, bag: Path, run_dir: Path,
                   progress: bool = True) -> dict[str, Any]:
    """Run ``nodes`` (a calibrate graph recording to ``bag``) until the excitation finished.

    Returns a summary: ``error`` (None when the recording is complete), the bag, the messages
    per topic, the recorded span and the limit check of the sent commands.
    """
    from tqdm import tqdm

    from simreal_ros.bringup.report import STAMPED_SENT_TOPIC, scan_bag
    from simreal_ros.bringup.runner import ProcessGraph
    from simreal_ros.shield.config import read_node_parameters

    run_dir.mkdir(parents=True, exist_ok=True)
    exc = next(n for n in nodes if n.name == EXCITATION_NODE)
    command_topic = next(n for n in nodes if n.name == "safety_shield").parameters["policy_topic"]
    summary: dict[str, Any] = {"error": None, "bag": str(bag), "logs": str(run_dir),
                               "excitation_duration_s": exc.parameters["duration"]}
    graph = ProcessGraph(nodes, run_dir)
    graph.start()
    alive = lambda: not graph.failed()  # noqa: E731
    watcher = _Watcher("/joint_states", command_topic, STAMPED_SENT_TOPIC)
    try:
        up = lambda: watcher.counts["state"] > 0 and watcher.counts["command"] > 0 and watcher.recording()  # noqa
        if not _wait(up, STARTUP_TIMEOUT_S, alive):
            missing = [w for w, ok in (("joint states", watcher.counts["state"] > 0),
                                       ("excitation proposals", watcher.counts["command"] > 0),
                                       ("recorder", watcher.recording())) if not ok]
            failed = graph.failed()
            summary["error"] = (f"the calibrate graph did not come up within {STARTUP_TIMEOUT_S:.0f} s (no "
                                f"{', '.join(missing)})" + (f"; exited: {failed} (logs in {run_dir})" if failed else ""))
            return summary
        budget = float(exc.parameters["duration"]) + STARTUP_TIMEOUT_S
        bar = tqdm(total=round(float(exc.parameters["duration"])), desc="excitation", unit="s", disable=not progress,
                   dynamic_ncols=True)
        end = time.monotonic() + budget
        last_sent, last_change = -1, time.monotonic()
        while watcher.phase != "finished" and time.monotonic() < end and alive():
            if watcher.counts["sent"] != last_sent:
                last_sent, last_change = watcher.counts["sent"], time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                break
            elapsed, stop = watcher.progress
            bar.n = min(bar.total, round(max(0.0, elapsed - (stop - float(exc.parameters["duration"])))))
            bar.set_postfix(phase=watcher.phase or "starting", sent=watcher.counts["sent"])
            bar.refresh()
            time.sleep(0.2)
        bar.n = bar.total if watcher.phase == "finished" else bar.n
        bar.close()
        if watcher.phase != "finished":
            failed = graph.failed()
            stalled = time.monotonic() < end
            summary["error"] = (f"node process(es) exited: {failed} (logs in {run_dir})" if failed else
                                f"the graph stalled: no sent command for {STALL_S:.0f} s (excitation phase "
                                f"'{watcher.phase}', {watcher.counts['sent']} sent; logs in {run_dir})" if stalled else
                                f"the excitation did not finish within {budget:.0f} s (phase '{watcher.phase}')")
            return summary
        # the recorder has the whole run and the hold (it subscribed before the first proposal, see
        # the excitation's 'recorder' parameter, so its count of proposals is the excitation's)
        rate = float({**read_node_parameters(exc.param_files[-1], EXCITATION_NODE), **exc.parameters}["rate_hz"])
        target = watcher.proposals + round(HOLD_S * rate)
        if not _wait(lambda: watcher.recorded >= target, HOLD_S + RECORDER_LAG_S, alive):
            summary["error"] = (f"the recorder did not record the end of the run within {RECORDER_LAG_S:.0f} s "
                                f"({watcher.recorded} of {target} proposals; logs in {run_dir})")
            return summary
        summary["sent_commands_seen"] = watcher.counts["sent"]
    finally:
        watcher.close()
        graph.stop()
    if not bag.is_dir():
        summary["error"] = f"the recorder wrote no bag at {bag} (logs in {run_dir})"
        return summary
    shield = next(n for n in nodes if n.name == "safety_shield")
    summary.update(scan_bag(bag, shield_config(shield)))
    return summary
