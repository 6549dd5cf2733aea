"""baseline_controller node as a real process over DDS: limit-respecting commands at its rate
that bring the flange to the goal, hold without a goal, and refusal of bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.robot import load_robot

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("rate", [20.0, 25.0], ids=["file_rate", "graph_rate"])
def test_node_commands_reach_the_goal_within_limits(processes, ros_node, rate):
    """At config/baseline.yaml's 20 Hz, and at a manifest's 25 Hz as the bringup graph sets it."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from simreal_ros.nodes.common import stamp_to_sec

    robot = load_robot()
    proc = processes.start("-m", "simreal_ros.nodes.baseline_node", "--ros-args", "--params-file",
                           "config/baseline.yaml", "-p", "diagnostics_period:=0.25", "-p", f"rate_hz:={rate}",
                           name="baseline")
    node = ros_node
    commands: list[np.ndarray] = []
    diags: list[tuple[float, dict[str, str]]] = []  # (the node's stamp, its counters)
    node.create_subscription(Float64MultiArray, "/simreal/baseline/command",
                             lambda m: commands.append(np.array(m.data)), 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.extend(
        (stamp_to_sec(m.header.stamp), {kv.key: kv.value for kv in st.values}) for st in m.status
        if st.name == "baseline_controller"), 50)
    state_pub = node.create_publisher(JointState, "/simreal/state_estimate", 10)
    goal_pub = node.create_publisher(PointStamped, "/simreal/goal", 10)
    # the "robot" follows the commands exactly (perfect tracking); names in a different order
    names = list(reversed(robot.joint_names))
    q = [robot.ready_pose.copy()]

    def publish_state():
        if commands:
            q[0] = commands[-1]
        msg = JointState(name=names, position=q[0][::-1].tolist(), velocity=[0.0] * 7)
        msg.header.stamp = node.get_clock().now().to_msg()
        state_pub.publish(msg)

    node.create_timer(0.01, publish_state)
    assert node.spin_until(lambda: len(commands) >= 3, timeout=30), processes.output(proc)
    # no goal yet: holds the measured pose
    assert np.allclose(commands[-1], robot.ready_pose, atol=1e-9)

    goal = np.array([0.45, 0.25, 0.35])
    msg = PointStamped()
    msg.point.x, msg.point.y, msg.point.z = goal
    start = len(commands)
    goal_pub.publish(msg)
    reached = node.spin_until(lambda: np.linalg.norm(robot.fk(commands[-1])[:3, 3] - goal) < 1e-3, timeout=20)
    assert reached, (np.linalg.norm(robot.fk(commands[-1])[:3, 3] - goal), processes.output(proc))

    # the command rate from the node's own counter and stamps, over at least 2 s of them
    assert node.spin_until(lambda: diags, timeout=10)
    n_diag = len(diags)
    assert node.spin_until(lambda: len(diags) > n_diag and diags[-1][0] - diags[n_diag - 1][0] >= 2.0, timeout=30)
    (t_a, a), (t_b, b) = diags[n_diag - 1], diags[-1]
    measured = (int(b["commands"]) - int(a["commands"])) / (t_b - t_a)
    assert 0.8 * rate < measured < 1.2 * rate, measured
    cmds = np.array(commands[start - 1:])
    lim = robot.limits
    assert np.all(cmds >= lim.position_min) and np.all(cmds <= lim.position_max)
    step = np.abs(np.diff(cmds, axis=0))  # per control period, the node's own clock
    assert np.all(step <= lim.velocity * 0.5 / rate + 1e-9)

    # another controller is in command: the shield sends something else; the baseline
    # continues from what was sent (bumpless take-over), then heads back to the goal
    sent_pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    elsewhere = commands[-1] + np.array([0.3, -0.2, 0.0, 0.2, 0.0, 0.0, 0.0])
    n0 = len(commands)
    sent_pub.publish(Float64MultiArray(data=elsewhere.tolist()))
    assert node.spin_until(lambda: len(commands) >= n0 + 3, timeout=5)
    after = np.array(commands[n0:])
    jumped = [i for i, c in enumerate(after) if np.max(np.abs(c - elsewhere)) < 0.1]
    assert jumped, "the baseline did not take over from the sent command"
    follow = after[jumped[0]:]
    assert np.all(np.abs(np.diff(follow, axis=0)) <= lim.velocity * 0.5 / rate + 1e-9)


def test_bad_parameter_refuses_to_start_naming_the_key(processes):
    proc = processes.start("-m", "simreal_ros.nodes.baseline_node", "--ros-args", "-p", "velocity_scale:=1.5",
                           name="bad")
    assert proc.wait(timeout=30) == 1
    out = processes.output(proc)
    assert "velocity_scale" in out and "1.5" in out and "0.01" in out, out
