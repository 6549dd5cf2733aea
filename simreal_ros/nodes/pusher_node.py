"""``push_baseline`` node: the scripted puck pusher as the push task's baseline and the shield's fallback.

Subscribes to the state estimate (``sensor_msgs/JointState``), the goal on the table
(``geometry_msgs/PointStamped``) and the tracked puck (``geometry_msgs/PoseStamped``). Every
``1/rate_hz`` seconds it runs :class:`~simreal_ros.baseline.pusher.ScriptedPusher` on the tool
tip (forward kinematics of the state) and the tracked puck, moves the tool's reference point in
the table plane (:class:`~simreal_ros.robot.planar.PlanarReference`, the push policy's own
mapping) and publishes the joint position targets (``std_msgs/Float64MultiArray``, robot joint
order) on ``command_topic`` for the shield. Without a state, a goal or a tracked pose no fresher
than ``max_object_age`` it proposes holding the measured pose. The task's geometry comes from
``config/push_task.yaml`` and ``urdf/panda_pusher.yaml``.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from simreal_ros.baseline.pusher import PusherConfig, ScriptedPusher
from simreal_ros.nodes.common import (
    LATEST_STATE_QOS,
    JointOrder,
    array_msg,
    finite_positions,
    publish_status,
    run_node,
    stamp_to_sec,
    subscribe_goal,
)
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.robot import load_robot
from simreal_ros.robot.mujoco_model import TABLE_TOP
from simreal_ros.robot.planar import PlanarFrame, PlanarReference
from simreal_ros.robot.tool import load_tool
from simreal_ros.settings import from_settings, settings_of
from simreal_ros.sim.push_task import load_push_task

NODE_NAME = "push_baseline"

SPEC = [replace(s, read_only=True) for s in (
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)"),
    Param("state_topic", "/simreal/state_estimate", "sensor_msgs/JointState input (estimate or /joint_states)"),
    Param("goal_topic", "/simreal/goal", "geometry_msgs/PointStamped goal of the puck on the table (base frame)"),
    Param("object_topic", "/simreal/object_pose", "geometry_msgs/PoseStamped tracked puck"),
    Param("command_topic", "/simreal/baseline/command", "proposed joint targets (Float64MultiArray)"),
    Param("rate_hz", 10.0, "proposal rate; the graph sets the policy manifest's rate", unit="Hz", low=1.0,
          high=200.0),
    Param("max_object_age", 0.1, "an older tracked pose is not acted on (the pusher holds)", unit="s", low=0.001,
          high=1.0),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
    *settings_of(PusherConfig),
)]
_CORE_KEYS = tuple(s.name for s in settings_of(PusherConfig))


class PushBaselineNode(Node):
    """Thin adapter around :class:`ScriptedPusher` + :class:`PlanarReference`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = self.params = declare_and_read(self, SPEC)
        self.robot = load_robot(p["robot"])
        task, tool = load_push_task(), load_tool(flange_link=self.robot.flange_link)
        frame = PlanarFrame.for_robot(self.robot, TABLE_TOP + task.push_height, tool.tip_offset, task.workspace,
                                      task.tool_start)
        self.task = task
        self.pusher = ScriptedPusher(task.action_scale, task.puck_radius, tool.radius,
                                     from_settings(PusherConfig, {k: p[k] for k in _CORE_KEYS}, "parameters"))
        self.reference = PlanarReference(self.robot, frame, task.max_lead)
        self.order = JointOrder(self.robot.joint_names)
        self.cmd_pub = self.create_publisher(Float64MultiArray, p["command_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, p["state_topic"], self._on_state, LATEST_STATE_QOS)
        self.create_subscription(PoseStamped, p["object_topic"], self._on_object, LATEST_STATE_QOS)
        subscribe_goal(self, PointStamped, p["goal_topic"], self._on_goal)
        sim_time = self.get_parameter("use_sim_time").value
        self.create_timer(1.0 / p["rate_hz"], self._on_timer,
                          clock=None if sim_time else Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(p["diagnostics_period"], self._on_diagnostics)
        self._q = self._goal = self._puck = None
        self._puck_stamp = 0.0
        self.counts = {"commands": 0, "holds": 0, "bad_states": 0}
        self.get_logger().info(f"{p['state_topic']} + {p['object_topic']} + {p['goal_topic']} -> "
                               f"{p['command_topic']} at {p['rate_hz']:g} Hz")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_state(self, msg) -> None:
        q = finite_positions(self, self.order, msg, self.counts)
        if q is not None:
            self._q = q

    def _on_object(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        xyz = np.array([p.x, p.y, p.z])
        if np.all(np.isfinite(xyz)):
            self._puck, self._puck_stamp = xyz, stamp_to_sec(msg.header.stamp) or self._now()

    def _on_goal(self, msg: PointStamped) -> None:
        g = np.array([msg.point.x, msg.point.y, msg.point.z])
        if np.all(np.isfinite(g)):
            self._goal = g

    def _on_timer(self) -> None:
        if self._q is None:
            return
        fresh = self._puck is not None and abs(self._now() - self._puck_stamp) <= self.params["max_object_age"]
        if self._goal is None or not fresh:
            self.counts["holds"] += 1
            self.reference.reset()
            cmd = self._q.copy()
        else:
            tip = self.reference.frame.tip_position(self.robot, self._q)
            a = self.pusher.act(tip, self._puck, self._goal)
            cmd = self.reference.step(self._q, self.task.action_scale * a)
        self.cmd_pub.publish(array_msg(cmd, label="position"))
        self.counts["commands"] += 1

    def _on_diagnostics(self) -> None:
        status = DiagnosticStatus(name=NODE_NAME, hardware_id=self.robot.name)
        status.level = DiagnosticStatus.OK if self._q is not None else DiagnosticStatus.WARN
        status.message = self.pusher.phase if self._q is not None else "waiting for the joint state"
        publish_status(self, self.diag_pub, status, self.counts)


def main(args=None) -> int:
    return run_node(PushBaselineNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
