"""The push task through the graph (issue 12): the sim bridge publishes the tracked puck as a lab's
tracker would (PoseStamped, at the tracker rate, stamped at acquisition), the policy node
subscribes to the inputs its bundle declares and refuses to start without them, the scripted
pusher node proposes through the same planar mapping, and the graph wires the push task (its
baseline, the shield's flange box, the recorded object topic) from one launch argument."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.robot import load_robot
from simreal_ros.robot.mujoco_model import TABLE_TOP

pytestmark = pytest.mark.ros


def _push_bundle(tmp_path):
    from simreal_ros.policy.onnx_linear import write_linear_bundle
    from simreal_ros.sim.push_env import PUSH_TERMS, PushEnv

    env = PushEnv()
    return write_linear_bundle(tmp_path / "push", env.robot, terms=PUSH_TERMS, seed=0, gain=0.3,
                               action_type="tool_planar_delta", action_scale=env.task.action_scale,
                               control_rate_hz=env.task.control_rate_hz, action_planar=env.action_planar,
                               provenance={"training": {"env": {"id": "SimReal/Push-v0"}}})


def test_graph_wires_the_push_task_from_one_argument(tmp_path):
    from simreal_ros.bringup.graph import OBJECT_TOPIC, GraphOptions, build_graph, shield_config

    bundle = _push_bundle(tmp_path)
    nodes = {n.name: n for n in build_graph(GraphOptions(task="push", policy=str(bundle), record=True))}
    assert nodes["sim_bridge"].parameters["task"] == "push"
    assert "baseline_controller" not in nodes and nodes["push_baseline"].parameters["rate_hz"] == 10.0
    assert nodes["policy_executor"].parameters["bundle"] == str(bundle)
    box = shield_config(nodes["safety_shield"])
    assert box.cartesian_box_enabled and box.cartesian_box[2] == pytest.approx(TABLE_TOP + 0.12)
    assert OBJECT_TOPIC in nodes["recorder"].parameters["topics"]
    with pytest.raises(ValueError, match="is a push policy; launch argument task is 'reach'"):
        build_graph(GraphOptions(task="reach", policy=str(bundle)))
    with pytest.raises(ValueError, match="is a reach policy"):
        from simreal_ros.resources import resource

        build_graph(GraphOptions(task="push", policy=str(resource("policies", "reach_default"))))


def test_sim_bridge_tracks_the_puck_and_policy_and_pusher_propose_on_it(tmp_path, processes, ros_node):
    from geometry_msgs.msg import PointStamped, PoseStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from simreal_ros.nodes.common import stamp_to_sec

    robot = load_robot()
    bundle = _push_bundle(tmp_path)
    node = ros_node
    poses, goals, policy_cmds, pusher_cmds, states = [], [], [], [], []
    node.create_subscription(PoseStamped, "/simreal/object_pose", poses.append, 100)
    from simreal_ros.nodes.common import subscribe_goal

    subscribe_goal(node, PointStamped, "/simreal/goal", goals.append)
    node.create_subscription(Float64MultiArray, "/simreal/policy/command", lambda m: policy_cmds.append(m), 100)
    node.create_subscription(Float64MultiArray, "/simreal/baseline/command", lambda m: pusher_cmds.append(m), 100)
    node.create_subscription(JointState, "/joint_states", states.append, 10)
    processes.start("-m", "simreal_ros.nodes.sim_bridge_node", "--ros-args", "--params-file", "config/sim_bridge.yaml",
                    "-p", "task:=push", name="bridge")
    # both controllers take the raw joint states (no estimator in this test)
    processes.start("-m", "simreal_ros.nodes.policy_node", "--ros-args", "--params-file", "config/policy.yaml",
                    "-p", f"bundle:={bundle}", "-p", "state_topic:=/joint_states", name="policy")
    processes.start("-m", "simreal_ros.nodes.pusher_node", "--ros-args", "--params-file", "config/push_baseline.yaml",
                    "-p", "state_topic:=/joint_states", name="pusher")
    assert node.spin_until(lambda: len(poses) >= 60 and len(policy_cmds) >= 10 and len(pusher_cmds) >= 10,
                           timeout=90), (len(poses), len(policy_cmds), len(pusher_cmds),
                                         [processes.output(p)[-2000:] for p in processes.procs])
    stamps = np.array([stamp_to_sec(p.header.stamp) for p in poses])
    steps = np.diff(stamps)
    assert np.all(steps > 0)  # acquisition stamps, in order
    assert np.median(steps) == pytest.approx(0.02, abs=1e-3)  # the task's 50 Hz tracker (no drops at nominal)
    z = np.array([p.pose.position.z for p in poses])
    assert np.all(np.abs(z - (TABLE_TOP + 0.015)) < 0.002)  # the puck lies on the table
    goal = goals[-1].point
    assert goal.z == pytest.approx(TABLE_TOP)
    for m in (policy_cmds[-1], pusher_cmds[-1]):
        assert len(m.data) == robot.n_joints and m.layout.dim[0].label == "position"
        assert np.all(np.isfinite(m.data))


def test_policy_node_refuses_a_bundle_whose_inputs_it_cannot_provide(tmp_path, processes):
    bundle = _push_bundle(tmp_path)
    proc = processes.start("-m", "simreal_ros.nodes.policy_node", "--ros-args", "--params-file",
                           "config/policy.yaml", "-p", f"bundle:={bundle}", "-p", "object_topic:=''",
                           name="policy")
    rc = proc.wait(timeout=60)
    out = processes.output(proc)
    assert rc != 0
    assert "observes object_pose, which this node cannot provide: parameter 'object_topic' is empty" in out, out


def test_push_session_through_the_whole_graph_records_the_tracked_puck(tmp_path):
    """`simreal sim --task push`'s session with every node its own process: the pusher drives
    (shadow; the policy runs beside it), the puck reaches the goals, every sent command respects
    every limit, and the bag holds the tracked puck (read back with rosbags)."""
    from simreal_ros.bringup.graph import OBJECT_TOPIC, GraphOptions, build_graph
    from simreal_ros.bringup.report import POLICY_TOPIC, read_bag
    from simreal_ros.bringup.session import run_session

    bundle = _push_bundle(tmp_path)
    opts = GraphOptions(task="push", policy=str(bundle), shield_mode="shadow", output_dir=str(tmp_path),
                        bag_name="run")
    s = run_session(build_graph(opts), opts, tmp_path / "logs", goals=2, duration=0.0, goal_timeout=25.0,
                    processes=True, progress=False)
    assert s["error"] is None, s
    assert s["task"] == "push" and s["goals_reached"] == 2, s["goals"]
    assert s["limit_violations"] == 0, s["limit_violation_examples"]
    data = read_bag(tmp_path / "run", [OBJECT_TOPIC, POLICY_TOPIC])
    poses = data[OBJECT_TOPIC]
    assert len(poses) > 50
    assert all(abs(m.pose.position.z - (TABLE_TOP + 0.015)) < 0.003 for _, m in poses)
    assert len(data[POLICY_TOPIC]) > 10  # the policy ran in shadow on the same inputs


def test_shipped_push_policy_drives_the_whole_graph(tmp_path):
    """`simreal sim --task push` with the shipped policy in command (shield active): the puck reaches
    the goals through DDS, every sent command respects every limit."""
    from simreal_ros.bringup.graph import GraphOptions, build_graph
    from simreal_ros.bringup.session import run_session

    opts = GraphOptions(task="push", output_dir=str(tmp_path), bag_name="run")
    nodes = build_graph(opts)
    assert next(n for n in nodes if n.name == "policy_executor").parameters["bundle"].endswith("push_default")
    s = run_session(nodes, opts, tmp_path / "logs", goals=2, duration=0.0, goal_timeout=25.0, processes=True,
                    progress=False)
    assert s["error"] is None, s
    assert s["goals_reached"] == 2, s["goals"]
    assert s["limit_violations"] == 0, s["limit_violation_examples"]
    assert s["policy_commands"] > 20
