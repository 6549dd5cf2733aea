"""End to end: the whole graph in simulation, every node its own process over DDS (loopback),
recorded to a bag that is read back with rosbags (the writer uses the mcap library)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from simreal_ros.bag.check import stamped_commands
from simreal_ros.bag.status import RECORDER_STATUS, not_received
from simreal_ros.bringup.graph import GraphOptions, build_graph
from simreal_ros.bringup.report import BASELINE_TOPIC, POLICY_TOPIC, STAMPED_SENT_TOPIC, commands, read_bag
from simreal_ros.resources import share_dir
from simreal_ros.robot import load_robot
from simreal_ros.shield.config import read_node_parameters

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

TRUTH = "/simreal/sim/ground_truth"
SIM_CONFIG = share_dir() / "config" / "sim_bridge.yaml"
#: the machine's load during a test: as it is, or with one CPU-burning process per core on top
LOADS = ("idle", "hog")
HOGS_PER_CORE = int(os.environ.get("SIMREAL_TEST_HOGS_PER_CORE", "1"))

HOG = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture(params=LOADS)
def load(request):
    """Run the test as the machine is, and again with a busy-loop process per core for its
    whole duration (the guarantees must not depend on getting the CPU in time)."""
    hogs = []
    if request.param == "hog":
        hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(HOGS_PER_CORE * (os.cpu_count() or 1))]
    yield request.param
    for h in hogs:
        h.kill()
        h.wait()


@pytest.fixture(autouse=True)
def _needs_shipped_policy():
    if not (share_dir() / "policies" / "reach_default" / "manifest.yaml").exists():
        pytest.fail("the shipped policy bundle policies/reach_default is missing")


def _session(tmp_path, goals, compose_hot_path=False, **opts):
    from simreal_ros.bringup.session import run_session

    options = GraphOptions(output_dir=str(tmp_path), bag_name="run", **opts)
    return run_session(build_graph(options), options, tmp_path / "logs", goals=goals, duration=0.0,
                       goal_timeout=12.0, processes=True, progress=False, compose_hot_path=compose_hot_path)


def test_full_graph_reaches_goals_without_limit_violations(tmp_path, load):
    s = _session(tmp_path, goals=3)
    assert s["error"] is None, s
    assert s["goals_reached"] >= 2, s["goals"]
    # the recorded sent commands, read back independently, respect every limit
    assert s["bag_sent_commands"] > 50
    assert s["limit_violations"] == 0, s["limit_violation_examples"]
    counts = s["bag_messages"]
    for topic in ("/joint_states", "/simreal/state_estimate", "/simreal/belief", POLICY_TOPIC, BASELINE_TOPIC,
                  "/simreal/goal", "/diagnostics", STAMPED_SENT_TOPIC):
        assert counts.get(topic, 0) > 0, (topic, counts)
    data = read_bag(tmp_path / "run", ["/diagnostics"])
    names = {st.name.split(":")[0] for _, m in data["/diagnostics"] for st in m.status}
    assert {"safety_shield", "policy_executor", "state_estimator", "sim_bridge"} <= names, names
    # the shield's intervention counter is in the bag, and every recorded intervention names
    # the joint, the limit kind, what was requested and what was applied
    shield = [{kv.key: kv.value for kv in st.values} for _, m in data["/diagnostics"] for st in m.status
              if st.name == "safety_shield" and any(kv.key == "interventions" for kv in st.values)]
    assert shield, "no shield diagnostics with an intervention count in the bag"
    recorded = read_bag(tmp_path / "run", ["/simreal/shield/interventions"]).get("/simreal/shield/interventions", [])
    for _, m in recorded:
        for st in m.status:
            values = {kv.key: kv.value for kv in st.values}
            assert {"joint", "kind", "requested", "applied"} <= set(values), values
            assert values["joint"] in {f"panda_joint{i}" for i in range(1, 8)}
    assert len(recorded) == 0 or int(shield[-1]["interventions"]) > 0


def test_composed_hot_path_reaches_goals_and_records_every_stream(tmp_path):
    """simreal sim --compose-hot-path: the estimator, policy and shield share one process and
    executor; the recorder, in its own process, still gets every stream of the hot path."""
    s = _session(tmp_path, goals=2, compose_hot_path=True)
    assert s["error"] is None, s
    assert s["goals_reached"] == 2, s["goals"]
    assert s["limit_violations"] == 0, s["limit_violation_examples"]
    counts = s["bag_messages"]
    for topic in ("/simreal/state_estimate", POLICY_TOPIC, STAMPED_SENT_TOPIC):
        assert counts.get(topic, 0) > 50, (topic, counts)
    assert (tmp_path / "logs" / "composed.log").exists()


def _max(values, what):
    assert len(values), f"no samples: {what}"
    return float(np.max(values))


def _speeds(truth):
    stamps = np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for _, m in truth])
    return stamps, np.array([np.max(np.abs(m.velocity)) for _, m in truth])


def test_killing_the_policy_brakes_and_holds_and_recording_goes_on(tmp_path, ros_node, load):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_srvs.srv import Trigger

    from simreal_ros.bringup.runner import ProcessGraph

    speed = {"now": None}

    def on_truth(m):  # keep only fresh samples: a probe that lags must not act on old motion
        stamp = m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec
        speed["stamp"] = max(speed.get("stamp", 0.0), stamp)
        if abs(time.time() - stamp) < 0.05:
            speed["now"] = float(np.max(np.abs(m.velocity)))
            speed["max"] = max(speed.get("max", 0.0), speed["now"])

    status: dict = {}
    recorder: dict = {}

    def on_diagnostics(m):
        for st in m.status:
            if st.name == "safety_shield":
                status.update({kv.key: kv.value for kv in st.values})
            elif st.name == RECORDER_STATUS:
                recorder.update({kv.key: kv.value for kv in st.values})

    def policy_drives() -> bool:  # active and not reverted to the baseline (a momentary hold is not a hand-over)
        return status.get("mode") == "active" and not status.get("reverted")

    ros_node.create_subscription(JointState, TRUTH, on_truth, 1)
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    next_goal = ros_node.create_client(Trigger, "/sim_bridge/next_goal")
    reset, active = (ros_node.create_client(Trigger, f"/safety_shield/{s}") for s in ("reset", "mode_active"))
    options = GraphOptions(output_dir=str(tmp_path), bag_name="run")
    graph = ProcessGraph(build_graph(options), tmp_path / "logs")
    graph.start()
    try:
        assert next_goal.wait_for_service(timeout_sec=60.0)
        # the recorder is receiving what the checks below read: its own counts say so (its
        # subscriptions appearing in the graph did not: a publisher can match one later, and a
        # fresh-clone CI bag then held no ground truth in the 2 s before the kill)
        recorded = [TRUTH, STAMPED_SENT_TOPIC, POLICY_TOPIC]
        assert ros_node.spin_until(lambda: not not_received(recorder, recorded), 60.0), not_received(recorder, recorded)
        assert ros_node.spin_until(lambda: speed["now"] is not None and speed["now"] < 0.01, 30.0)  # settled
        assert ros_node.spin_until(lambda: "source" in status, 10.0)
        if status.get("reverted"):
            # Start-up on a loaded machine (stalls while seven processes discover each other) can
            # trip the shield's automatic revert before this test begins; that is not its subject:
            # clear it and hand the arm back to the policy (a revert during the motion still fails)
            for client in (reset, active):
                future = client.call_async(Trigger.Request())
                assert ros_node.spin_until(future.done, 10.0) and future.result().success, future.result()
            assert ros_node.spin_until(policy_drives, 10.0), status
        future = next_goal.call_async(Trigger.Request())
        assert ros_node.spin_until(future.done, 10.0) and future.result().success
        speed["now"], speed["max"] = None, 0.0
        assert ros_node.spin_until(lambda: (speed["now"] or 0.0) > 0.2, 10.0), f"arm not moving: {speed}"
        # the policy drives (the shield has not reverted to the baseline, which would go on moving the arm)
        assert policy_drives(), status
        graph.procs["policy_executor"].send_signal(signal.SIGKILL)  # mid-motion
        t_kill = time.time()  # the bridge and the shield stamp with ROS (system) time
        # the sim has run 4 s past the kill (its own stamps), the recording with it
        assert ros_node.spin_until(lambda: speed["stamp"] > t_kill + 4.0, 30.0), speed
        assert not {n: c for n, c in graph.failed().items() if n != "policy_executor"}
    finally:
        graph.stop()
    data = read_bag(tmp_path / "run", [TRUTH, STAMPED_SENT_TOPIC, POLICY_TOPIC])
    t, speeds = _speeds(data[TRUTH])  # stamped at acquisition, one sample per publish period of the sim
    # Time after the kill in the sim's own physics: the number of samples x the period. A paced sim
    # that stalled longer than max_catchup periods skips the backlog and its stamps jump forward,
    # so on a loaded machine "1 s of stamps after the kill" can hold much less than 1 s of motion.
    period = 1.0 / float(read_node_parameters(SIM_CONFIG, "sim_bridge")["publish_rate_hz"])
    after = np.flatnonzero(t >= t_kill)
    assert len(after) * period > 2.0, f"the sim ran only {len(after) * period:.2f} s of physics in the 4 s after the kill"
    settled = after[0] + int(round(1.0 / period))
    assert _max(speeds[(t > t_kill - 2.0) & (t < t_kill)], "motion before the kill") > 0.1  # the bag shows it ...
    t_pol, _ = commands(data[POLICY_TOPIC])
    # ... the last proposal at the kill: by the recorder's receive time, which lags by its backlog
    # under the CPU hog (0.32 s in a fresh-clone CI on 90fad44); a policy still proposing would
    # show for the 4 s after ...
    assert _max(t_pol, "policy proposals") < t_kill + 1.0
    t_sent, sent = stamped_commands(data[STAMPED_SENT_TOPIC], load_robot())
    assert _max(t_sent, "sent commands") > t_kill + 3.0  # ... the shield and the recording going on ...
    # ... and the arm braking within the command timeout (0.1 s) + one cycle + the braking time,
    # then holding still: the joint speeds decay and the sent targets stop changing
    assert _max(speeds[settled:], "state 1 s after the kill") < 0.02, (
        f"still moving 1 s (sim time) after the kill; sim overruns (skipped periods) so far: "
        f"{int(round(((t[-1] - t[after[0]]) / period) + 1 - (len(t) - after[0])))}")
    held = sent[t_sent > t_kill + 1.5]
    assert len(held) > 10 and np.max(np.abs(held - held[-1])) < 1e-6


def test_shadow_mode_never_sends_a_policy_command(tmp_path, load):
    s = _session(tmp_path, goals=2, shield_mode="shadow")
    assert s["error"] is None, s
    data = read_bag(tmp_path / "run", [STAMPED_SENT_TOPIC, POLICY_TOPIC, BASELINE_TOPIC])
    _, sent = stamped_commands(data[STAMPED_SENT_TOPIC], load_robot())
    _, proposals = commands(data[POLICY_TOPIC])
    assert len(proposals) > 10 and len(sent) > 20  # the policy ran and was recorded
    # no sent command equals (or is near) any policy proposal ...
    dist = np.min(np.max(np.abs(sent[:, None, :] - proposals[None, :, :]), axis=2), axis=1)
    assert np.min(dist) > 1e-9
    # ... and the arm follows the baseline: it reached the goal under the baseline's commands
    assert s["goals_reached"] == 2, s["goals"]
