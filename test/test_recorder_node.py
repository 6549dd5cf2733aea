"""The recorder node as a separate process: clean stop, kill and recovery, read back by rosbags."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

pytestmark = pytest.mark.ros

TS = get_typestore(Stores.ROS2_KILTED)


def start_recorder(processes, out, name, *params):
    args = ["-m", "simreal_ros.nodes.recorder_node", "--ros-args", "--params-file", "config/recorder.yaml",
            "-p", f"output_dir:={out}", "-p", f"bag_name:={name}", "-p", "discovery_period_s:=0.1"]
    for p in params:
        args += ["-p", p]
    return processes.start(*args, name=name)


def publishers(ros_node):
    from geometry_msgs.msg import PointStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import JointState

    js = ros_node.create_publisher(JointState, "/joint_states", 1000)
    goal = ros_node.create_publisher(PointStamped, "/simreal/goal",
                                     QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    return js, goal


def joint_state(i):
    from sensor_msgs.msg import JointState

    msg = JointState(name=[f"panda_joint{k}" for k in range(1, 8)], position=[float(i)] * 7)
    msg.header.stamp.sec, msg.header.stamp.nanosec = i // 1000, (i % 1000) * 1_000_000
    return msg


def read(bag) -> dict[str, list]:
    out: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, _t, raw in reader.messages():
            out.setdefault(conn.topic, []).append(TS.deserialize_cdr(raw, conn.msgtype))
    return out


def publish_n(ros_node, pub, start, n, every=5):
    for i in range(start, start + n):
        pub.publish(joint_state(i))
        if i % every == 0:
            ros_node.executor_.spin_once(timeout_sec=0.001)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_closes_a_bag_that_reads_back_exactly(processes, ros_node, tmp_path, sig):
    from geometry_msgs.msg import PointStamped

    js, goal = publishers(ros_node)
    g = PointStamped()
    g.header.frame_id, g.point.x, g.point.z = "base", 0.5, 0.4
    goal.publish(g)  # latched before the recorder exists: recorded through transient-local durability
    rec = start_recorder(processes, tmp_path, "clean", "flush_interval_s:=0.2")
    assert ros_node.spin_until(lambda: js.get_subscription_count() > 0 and goal.get_subscription_count() > 0, 30)
    ros_node.spin_until(lambda: False, 0.5)
    publish_n(ros_node, js, 0, 500)
    ros_node.spin_until(lambda: False, 1.0)
    assert processes.stop(rec, sig) == 0, processes.output(rec)
    bag = tmp_path / "clean"
    assert (bag / "metadata.yaml").exists()
    msgs = read(bag)
    assert [m.position[0] for m in msgs["/joint_states"]] == list(range(500))
    assert msgs["/joint_states"][123].header.stamp.nanosec == 123_000_000
    assert msgs["/simreal/goal"][0].point.x == 0.5 and msgs["/simreal/goal"][0].header.frame_id == "base"
    status = {kv.key: kv.value for kv in msgs["/simreal/recorder/status"][-1].status[0].values}
    assert status["/joint_states.received"] == "500" and status["/joint_states.dropped"] == "0"


def bag_messages_on_disk(bag, tmp_path) -> int:
    """Messages a recovery would find right now (recovered on a copy; the recorder keeps writing)."""
    copy = tmp_path / "probe_copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bag, copy)
    from simreal_ros.bag import recover

    return len(read(recover(copy).bag).get("/joint_states", []))


def test_sigkill_then_recover_keeps_everything_flushed(processes, ros_node, tmp_path):
    js, _ = publishers(ros_node)
    rec = start_recorder(processes, tmp_path, "killed", "flush_interval_s:=0.2", "max_bag_size_mb:=0.05")
    assert ros_node.spin_until(lambda: js.get_subscription_count() > 0, 30)
    ros_node.spin_until(lambda: False, 0.5)
    publish_n(ros_node, js, 0, 1000)
    bag = tmp_path / "killed"
    # wait (on the files, not a clock) until the recorder has flushed all 1000
    assert ros_node.spin_until(lambda: bag_messages_on_disk(bag, tmp_path) >= 1000, 20)
    publish_n(ros_node, js, 1000, 50)
    processes.stop(rec, signal.SIGKILL)
    assert not (bag / "metadata.yaml").exists()
    out = subprocess.run([sys.executable, "-m", "simreal_ros.cli", "bag", "recover", str(bag)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    positions = [m.position[0] for m in read(bag)["/joint_states"]]
    assert positions == list(range(len(positions)))  # a gap-free prefix of what was sent
    assert 1000 <= len(positions) <= 1050
    print(f"sent 1050, recovered {len(positions)}")
    assert len(list(bag.glob("*.mcap"))) >= 2  # the split files are all listed and read
    info = subprocess.run([sys.executable, "-m", "simreal_ros.cli", "bag", "info", str(bag)],
                          capture_output=True, text=True)
    assert info.returncode == 0 and "/joint_states" in info.stdout


def test_without_a_params_file_the_defaults_record_the_shields_stamped_sent_commands(processes, ros_node, tmp_path):
    """The node's own defaults (no params file) are config/recorder.yaml's: they include the topic
    'simreal bag check-limits' reads, so a run recorded with the defaults can be checked."""
    from sensor_msgs.msg import JointState

    from simreal_ros.bag.check import STAMPED_SENT_TOPIC, sent_commands

    sent = ros_node.create_publisher(JointState, STAMPED_SENT_TOPIC, 100)
    rec = processes.start("-m", "simreal_ros.nodes.recorder_node", "--ros-args", "-p", f"output_dir:={tmp_path}",
                          "-p", "bag_name:=defaults", "-p", "discovery_period_s:=0.1", name="defaults")
    assert ros_node.spin_until(lambda: sent.get_subscription_count() > 0, 20), \
        f"the recorder's default topics do not include {STAMPED_SENT_TOPIC}"
    ros_node.spin_until(lambda: False, 0.5)
    ready = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
    for i in range(50):
        msg = JointState(name=[f"panda_joint{k}" for k in range(1, 8)], position=ready)
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1, i * 10_000_000
        sent.publish(msg)
        ros_node.executor_.spin_once(timeout_sec=0.001)
    ros_node.spin_until(lambda: False, 1.0)
    assert processes.stop(rec, signal.SIGINT) == 0, processes.output(rec)
    times, rows, _ = sent_commands(tmp_path / "defaults")
    assert len(times) == 50 and times[:2].astype(float).tolist() == [1.0, 1.01] and rows.shape == (50, 7)
