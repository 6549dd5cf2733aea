"""``live_view`` node: the running stack in Foxglove, served on a local WebSocket (``view:=true``).

Subscribes to the measured joint states, the policy's and baseline's proposals, what the
shield sent, its interventions and status (``/diagnostics``), the goal and the push task's
object pose (``object_topic``); republishes them as Foxglove channels
(:data:`simreal_ros.view.server.CHANNELS`) with the robot description and every link's
transform from the package's own kinematics. Connect Foxglove to ``ws://127.0.0.1:8765`` and
import ``config/foxglove_layout.json``. Publishes nothing on ROS. A bad parameter or a port
that cannot be bound stops the process at start with exit status 1, naming it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from simreal_ros.nodes.common import JointOrder, run_node, subscribe_goal
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.robot import load_robot
from simreal_ros.settings import settings_of
from simreal_ros.view.config import ViewConfig

NODE_NAME = "live_view"

SPEC = [replace(s, read_only=True) for s in (
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)"),
    Param("joint_state_topic", "/joint_states", "sensor_msgs/JointState: the measured arm (drawn in 3D)"),
    Param("policy_command_topic", "/simreal/policy/command", "the policy's proposals (Float64MultiArray)"),
    Param("baseline_command_topic", "/simreal/baseline/command", "the baseline's proposals (Float64MultiArray)"),
    Param("sent_topic", "/simreal/shield/sent", "sensor_msgs/JointState: what the shield sent, its stamps"),
    Param("interventions_topic", "/simreal/shield/interventions", "diagnostic_msgs/DiagnosticArray"),
    Param("shield_name", "safety_shield", "the shield's status name on /diagnostics (its mode, source, revert)"),
    Param("goal_topic", "/simreal/goal", "geometry_msgs/PointStamped goal of the flange"),
    Param("object_topic", "/simreal/object_pose", "geometry_msgs/PoseStamped of the pushed object (the push "
          "task's puck), drawn as a cylinder ('' = off)"),
    *settings_of(ViewConfig),
)]
_CORE_KEYS = tuple(s.name for s in settings_of(ViewConfig))


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class LiveViewNode(Node):
    """Thin adapter around :class:`~simreal_ros.view.server.LiveView`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        from simreal_ros.view.server import LiveView

        p = declare_and_read(self, SPEC)
        self.params = p
        self.robot = load_robot(p["robot"])
        self.order = JointOrder(self.robot.joint_names)
        try:
            self.view = LiveView(self.robot, ViewConfig.from_mapping({k: p[k] for k in _CORE_KEYS}))
        except OSError as exc:
            raise ValueError(str(exc)) from None
        self._min_gap = 1.0 / p["state_rate_hz"]
        self._last_state = -float("inf")
        self.bad_messages = 0
        self.create_subscription(JointState, p["joint_state_topic"], self._on_state, qos_profile_sensor_data)
        for key in ("policy", "baseline"):
            self.create_subscription(Float64MultiArray, p[f"{key}_command_topic"],
                                     lambda msg, k=key: self._on_command(k, msg), 10)
        self.create_subscription(JointState, p["sent_topic"], self._on_sent, 10)
        self.create_subscription(DiagnosticArray, p["interventions_topic"], self._on_interventions, 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        subscribe_goal(self, PointStamped, p["goal_topic"], self._on_goal)
        if p["object_topic"]:
            self.create_subscription(PoseStamped, p["object_topic"], self._on_object, 10)
        self.create_timer(p["description_period"], self._on_description_timer)
        self.get_logger().info(f"Foxglove live view on {self.view.url} (import config/foxglove_layout.json)")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _bad(self, what: str, exc: Exception) -> None:
        self.bad_messages += 1
        self.get_logger().warning(f"live view: ignoring {what}: {exc}", throttle_duration_sec=5.0)

    # ------------------------------------------------------------------ callbacks
    def _on_state(self, msg: JointState) -> None:
        now = time.monotonic()
        if now - self._last_state < self._min_gap:
            return
        try:
            q, dq, eff = self.order.arrays(msg)
        except ValueError as exc:
            return self._bad(f"state on {self.params['joint_state_topic']}", exc)
        self._last_state = now
        self.view.publish_state(q, dq, eff, _ns(msg.header.stamp))

    def _on_command(self, key: str, msg: Float64MultiArray) -> None:
        if len(msg.data) != self.robot.n_joints:
            return self._bad(f"{key} command", ValueError(f"{len(msg.data)} values for {self.robot.n_joints} joints"))
        self.view.publish_command(key, msg.data, self._now_ns())

    def _on_sent(self, msg: JointState) -> None:
        try:
            q, _, _ = self.order.arrays(msg)
        except ValueError as exc:
            return self._bad(f"sent command on {self.params['sent_topic']}", exc)
        self.view.publish_command("sent", q, _ns(msg.header.stamp))

    def _on_interventions(self, msg: DiagnosticArray) -> None:
        entries = [{kv.key: kv.value for kv in st.values} for st in msg.status]
        self.view.publish_interventions(entries, _ns(msg.header.stamp))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == self.params["shield_name"]:
                level = st.level if isinstance(st.level, int) else int.from_bytes(st.level, "little")
                self.view.publish_shield_status(level, st.message, {kv.key: kv.value for kv in st.values},
                                                _ns(msg.header.stamp))

    def _on_goal(self, msg: PointStamped) -> None:
        self.view.publish_goal([msg.point.x, msg.point.y, msg.point.z], msg.header.frame_id, _ns(msg.header.stamp))

    def _on_object(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        self.view.publish_object([p.x, p.y, p.z], [o.x, o.y, o.z, o.w], msg.header.frame_id, _ns(msg.header.stamp))

    def _on_description_timer(self) -> None:
        self.view.flush_latched()
        if self.view.subscribed("description"):
            self.view.publish_description(self._now_ns())

    def destroy_node(self) -> None:
        view = getattr(self, "view", None)
        if view is not None:
            view.close()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(LiveViewNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
