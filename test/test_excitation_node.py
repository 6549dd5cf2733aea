"""The excitation controller node over DDS: starts from the measured pose (no jump), stays within
its fraction of the limits, then says it finished and holds. Its core, ExcitationRun, too."""

from __future__ import annotations

import numpy as np
import pytest

from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationRun, ExcitationRunConfig
from simreal_ros.robot import load_robot

ROBOT = load_robot()
START = ROBOT.ready_pose + np.array([0.4, -0.3, 0.2, 0.3, -0.4, 0.3, -0.5])


def test_the_run_starts_at_rest_where_the_arm_is_and_ends_at_rest_holding_the_centre():
    cfg = ExcitationConfig(duration=8.0, ramp=1.0)
    run = ExcitationRun(ROBOT, START, cfg, ExcitationRunConfig(seed=2))
    q, dq, ddq = run(0.0)
    np.testing.assert_allclose(q, START)
    np.testing.assert_allclose(dq, 0.0)
    np.testing.assert_allclose(ddq, 0.0)
    t = np.arange(0.0, run.end_time + 2.0, 0.002)
    qs, dqs, ddqs = map(np.array, zip(*(run(x) for x in t)))
    lim = ROBOT.limits
    assert np.all(np.abs(dqs) <= lim.velocity) and np.all(np.abs(ddqs) <= lim.acceleration)
    assert np.all(qs >= lim.position_min) and np.all(qs <= lim.position_max)
    # continuous (no jump anywhere): consecutive samples 2 ms apart move less than the speed limit allows
    assert np.all(np.abs(np.diff(qs, axis=0)) <= lim.velocity * 0.002 + 1e-12)
    done = t >= run.end_time
    np.testing.assert_allclose(qs[done], np.broadcast_to(ROBOT.ready_pose, qs[done].shape), atol=1e-12)
    np.testing.assert_allclose(dqs[done], 0.0, atol=1e-12)
    assert [run.phase(x) for x in (0.0, run.approach_time + 0.1, run.end_time)] == ["approach", "excite", "finished"]
    # the excitation moves every joint between approach and end
    moving = (t > run.approach_time + cfg.ramp) & (t < run.end_time - cfg.ramp)
    assert np.all(np.abs(dqs[moving]).max(axis=0) > 0.05)


def test_a_duration_shorter_than_two_ramps_is_refused_naming_both():
    with pytest.raises(ValueError, match="duration 1.5 s must be 0 .endless. or at least two ramps"):
        ExcitationConfig(duration=1.5, ramp=1.0)
    with pytest.raises(ValueError, match="q_start"):
        ExcitationRun(ROBOT, np.zeros(3))


@pytest.mark.ros
def test_the_node_proposes_from_the_measured_pose_then_finishes_and_holds(processes, ros_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    cmds, labels, phases = [], [], []
    ros_node.create_subscription(Float64MultiArray, "/simreal/excitation/command",
                                 lambda m: (cmds.append(np.array(m.data)),
                                            labels.append(m.layout.dim[0].label if m.layout.dim else "")), 100)

    def on_diag(msg):
        for st in msg.status:
            if st.name == "excitation_controller":
                phases.append({kv.key: kv.value for kv in st.values}.get("phase"))

    ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    pub = ros_node.create_publisher(JointState, "/simreal/state_estimate", 10)

    def publish_state():
        msg = JointState()
        msg.header.stamp = ros_node.get_clock().now().to_msg()
        msg.name = list(reversed(ROBOT.joint_names))  # mapped by name, not by position
        msg.position = [float(x) for x in reversed(START)]
        pub.publish(msg)

    ros_node.create_timer(0.02, publish_state)
    proc = processes.start("-m", "simreal_ros.nodes.excitation_node", "--ros-args", "--params-file",
                           "config/excitation.yaml", "-p", "duration:=2.0", "-p", "ramp:=0.5", "-p",
                           "min_approach:=0.5", "-p", "rate_hz:=50.0", "-p", "diagnostics_period:=0.2", name="exc")
    # nothing is proposed until the shield sends; then it starts from what the shield holds
    assert ros_node.spin_until(lambda: "waiting" in phases and len(phases) >= 3, 60), processes.output(proc)[-2000:]
    assert cmds == []
    held = START + 0.01  # the shield holds where it measured the arm, not quite the estimate now
    sent = ros_node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    ros_node.create_timer(0.05, lambda: sent.publish(Float64MultiArray(data=[float(x) for x in held])))
    assert ros_node.spin_until(lambda: "finished" in phases, 60), processes.output(proc)[-2000:]
    n = len(cmds)
    assert ros_node.spin_until(lambda: len(cmds) >= n + 10, 10)  # it keeps proposing: the hold
    assert set(labels) == {"position"}
    np.testing.assert_allclose(cmds[0], held, atol=1e-3)  # the first proposal is what the arm holds
    steps = np.abs(np.diff(np.array(cmds), axis=0))
    assert np.all(steps <= ROBOT.limits.velocity * 0.5 * 0.1)  # <= 0.4 of the limits, a loaded 100 ms gap at most
    held = np.array(cmds[n:])
    np.testing.assert_allclose(held, np.broadcast_to(ROBOT.ready_pose, held.shape), atol=1e-9)
    assert phases.index("finished") > 0 and "excite" in phases[:phases.index("finished")]
    assert "excitation finished after" in processes.output(proc)


@pytest.mark.ros
def test_with_a_recorder_named_it_starts_only_once_that_node_records_what_the_fit_reads(processes, ros_node):
    """The calibrate graph's recorder subscribes a topic only once it has seen a publisher and polls
    for it; on a loaded machine it subscribed /joint_states seconds after the excitation began (the
    bag lacked the approach). Here the shield holds and the state flows, but nothing is proposed
    until a node named 'recorder' subscribes every topic the fit reads; the old node started at once."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    cmds, status = [], []
    ros_node.create_subscription(Float64MultiArray, "/simreal/excitation/command", lambda m: cmds.append(m), 100)
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: status.extend(
        s.message for s in m.status if s.name == "excitation_controller"), 50)
    state = ros_node.create_publisher(JointState, "/simreal/state_estimate", 10)
    sent = ros_node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)

    def publish():
        state.publish(JointState(name=list(ROBOT.joint_names), position=[float(x) for x in START]))
        sent.publish(Float64MultiArray(data=[float(x) for x in START]))

    ros_node.create_timer(0.02, publish)
    proc = processes.start("-m", "simreal_ros.nodes.excitation_node", "--ros-args", "--params-file",
                           "config/excitation.yaml", "-p", "duration:=2.0", "-p", "ramp:=0.5", "-p",
                           "diagnostics_period:=0.2", "-p", "recorder:=recorder", name="exc")
    # a subscriber of some of the topics that is not the recorder does not count
    others = [ros_node.create_subscription(JointState, t, lambda _m: None, 10)
              for t in ("/joint_states", "/simreal/shield/sent")]
    waiting = lambda: sum("waiting for recorder to record" in m for m in status) >= 5  # noqa: E731
    assert ros_node.spin_until(waiting, 60), processes.output(proc)[-2000:]
    assert cmds == [] and others
    assert "/joint_states" in status[-1] and "/simreal/excitation/command" in status[-1], status[-1]
    ctx = ros_node.context
    recorder = rclpy.create_node("recorder", context=ctx)  # subscribes what the fit reads: then it starts
    try:
        for msg_type, topic in ((JointState, "/joint_states"), (JointState, "/simreal/shield/sent"),
                                (JointState, "/simreal/state_estimate"),
                                (Float64MultiArray, "/simreal/excitation/command"),
                                (Float64MultiArray, "/forward_position_controller/commands")):
            recorder.create_subscription(msg_type, topic, lambda _m: None, 10)
        # subscribed is not yet recording: it waits until the recorder's own counts (its /diagnostics)
        # show messages received on the topics others publish (a late match lost 0.24 s of states)
        n = len(status)
        assert ros_node.spin_until(lambda: sum("nothing received yet" in m for m in status[n:]) >= 3, 60), status[-1:]
        assert cmds == []
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        diag = recorder.create_publisher(DiagnosticArray, "/diagnostics", 10)
        topics = ("/joint_states", "/simreal/shield/sent", "/simreal/state_estimate",
                  "/forward_position_controller/commands")
        ros_node.create_timer(0.1, lambda: diag.publish(DiagnosticArray(status=[DiagnosticStatus(
            name="recorder", values=[KeyValue(key=f"{t}.received", value="3") for t in topics])])))
        assert ros_node.spin_until(lambda: len(cmds) >= 5, 60), processes.output(proc)[-2000:]
        np.testing.assert_allclose(np.array(cmds[0].data), START, atol=1e-9)  # from the held pose, no jump
    finally:
        recorder.destroy_node()
