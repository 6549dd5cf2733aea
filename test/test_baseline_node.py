"""baseline_controller node as a real process over DDS: limit-respecting commands at its rate
that bring the flange to the goal, hold without a goal, and refusal of bad parameters."""

from __future__ import annotations

import time

import numpy as np
import pytest

from simreal_ros.robot import load_robot

pytestmark = pytest.mark.ros
RATE = 20.0


def test_node_commands_reach_the_goal_within_limits(processes, ros_node):
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    robot = load_robot()
    proc = processes.start("-m", "simreal_ros.nodes.baseline_node", "--ros-args", "--params-file",
                           "config/baseline.yaml", name="baseline")
    node = ros_node
    commands: list[tuple[float, np.ndarray]] = []
    node.create_subscription(Float64MultiArray, "/simreal/baseline/command",
                             lambda m: commands.append((time.monotonic(), np.array(m.data))), 50)
    state_pub = node.create_publisher(JointState, "/simreal/state_estimate", 10)
    goal_pub = node.create_publisher(PointStamped, "/simreal/goal", 10)
    # the "robot" follows the commands exactly (perfect tracking); names in a different order
    names = list(reversed(robot.joint_names))
    q = [robot.ready_pose.copy()]

    def publish_state():
        if commands:
            q[0] = commands[-1][1]
        msg = JointState(name=names, position=q[0][::-1].tolist(), velocity=[0.0] * 7)
        msg.header.stamp = node.get_clock().now().to_msg()
        state_pub.publish(msg)

    node.create_timer(0.01, publish_state)
    assert node.spin_until(lambda: len(commands) >= 3, timeout=30), processes.output(proc)
    # no goal yet: holds the measured pose
    assert np.allclose(commands[-1][1], robot.ready_pose, atol=1e-9)

    goal = np.array([0.45, 0.25, 0.35])
    msg = PointStamped()
    msg.point.x, msg.point.y, msg.point.z = goal
    start = len(commands)
    goal_pub.publish(msg)
    reached = node.spin_until(lambda: np.linalg.norm(robot.fk(commands[-1][1])[:3, 3] - goal) < 1e-3, timeout=20)
    assert reached, (np.linalg.norm(robot.fk(commands[-1][1])[:3, 3] - goal), processes.output(proc))

    t = np.array([c[0] for c in commands[start:]])
    rate = (len(t) - 1) / (t[-1] - t[0])
    assert 0.7 * RATE < rate < 1.3 * RATE, rate
    cmds = np.array([c[1] for c in commands[start - 1:]])
    lim = robot.limits
    assert np.all(cmds >= lim.position_min) and np.all(cmds <= lim.position_max)
    step = np.abs(np.diff(cmds, axis=0))  # per control period, the node's own clock
    assert np.all(step <= lim.velocity * 0.5 / RATE + 1e-9)

    # another controller is in command: the shield sends something else; the baseline
    # continues from what was sent (bumpless take-over), then heads back to the goal
    sent_pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    elsewhere = commands[-1][1] + np.array([0.3, -0.2, 0.0, 0.2, 0.0, 0.0, 0.0])
    n0 = len(commands)
    sent_pub.publish(Float64MultiArray(data=elsewhere.tolist()))
    assert node.spin_until(lambda: len(commands) >= n0 + 3, timeout=5)
    after = np.array([c[1] for c in commands[n0:]])
    jumped = [i for i, c in enumerate(after) if np.max(np.abs(c - elsewhere)) < 0.1]
    assert jumped, "the baseline did not take over from the sent command"
    follow = after[jumped[0]:]
    assert np.all(np.abs(np.diff(follow, axis=0)) <= lim.velocity * 0.5 / RATE + 1e-9)


def test_bad_parameter_refuses_to_start_naming_the_key(processes):
    proc = processes.start("-m", "simreal_ros.nodes.baseline_node", "--ros-args", "-p", "velocity_scale:=1.5",
                           name="bad")
    assert proc.wait(timeout=30) == 1
    out = processes.output(proc)
    assert "velocity_scale" in out and "1.5" in out and "0.01" in out, out
