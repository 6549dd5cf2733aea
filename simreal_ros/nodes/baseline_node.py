"""``baseline_controller`` node: the classical reaching controller as the shield's fallback.

Subscribes to the state estimate (``sensor_msgs/JointState``), the goal
(``geometry_msgs/PointStamped``) and, to take over bumplessly, the commands the shield
actually sends. Every ``1/rate_hz`` seconds it runs
:class:`~simreal_ros.baseline.BaselineController` and publishes joint position targets
(``std_msgs/Float64MultiArray``, robot joint order) on ``/simreal/baseline/command``: what
the shield executes in ``shadow`` mode, blends from in ``blend`` mode and reverts to.

Before the first state nothing is published; without a goal the arm is brought to rest and
held. While the sent commands differ from this node's proposals (another controller is in
command), the interpolator follows them, so a revert continues the arm's motion smoothly.
A bad parameter stops the process at start with exit status 1, naming the key and range.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from simreal_ros.baseline import BaselineConfig, BaselineController
from simreal_ros.nodes.common import JointOrder, array_msg, finite_positions, publish_status, run_node, subscribe_goal
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.robot import load_robot
from simreal_ros.settings import settings_of

NODE_NAME = "baseline_controller"

#: The node's parameters: its wiring, then every setting of :class:`BaselineConfig` (default,
#: bounds and description declared there). All are read once at start.
SPEC = [replace(s, read_only=True) for s in (
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)"),
    Param("state_topic", "/simreal/state_estimate", "sensor_msgs/JointState input (estimate or /joint_states)"),
    Param("goal_topic", "/simreal/goal", "geometry_msgs/PointStamped goal of the flange (base frame, m)"),
    Param("command_topic", "/simreal/baseline/command", "proposed joint targets (Float64MultiArray)"),
    Param("sent_topic", "/forward_position_controller/commands",
          "commands the shield sends; followed while another controller is in command ('' = off)"),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
    *settings_of(BaselineConfig),
)]
_CORE_KEYS = tuple(s.name for s in settings_of(BaselineConfig))


class BaselineControllerNode(Node):
    """Thin adapter around :class:`BaselineController`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_and_read(self, SPEC)
        self.params = p
        self.robot = load_robot(p["robot"])
        self.core = BaselineController(self.robot, BaselineConfig.from_mapping({k: p[k] for k in _CORE_KEYS}))
        self.order = JointOrder(self.robot.joint_names)
        self.period = 1.0 / p["rate_hz"]
        self.cmd_pub = self.create_publisher(Float64MultiArray, p["command_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, p["state_topic"], self._on_state, qos_profile_sensor_data)
        subscribe_goal(self, PointStamped, p["goal_topic"], self._on_goal)  # latched or plain publishers
        if p["sent_topic"]:
            self.create_subscription(Float64MultiArray, p["sent_topic"], self._on_sent, 10)
        sim_time = self.get_parameter("use_sim_time").value
        self.timer = self.create_timer(self.period, self._on_timer,
                                       clock=None if sim_time else Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(p["diagnostics_period"], self._on_diagnostics)
        self._q: np.ndarray | None = None
        self._q_time = 0.0
        self._proposals: deque[np.ndarray] = deque(maxlen=5)  # recent ones: the shield's echo may lag
        self._sent: list[tuple[float, np.ndarray]] = []
        self._sent_new = False
        self.counts = {"commands": 0, "bad_states": 0, "bad_goals": 0, "followed": 0, "no_state": 0}
        self.get_logger().info(f"{p['state_topic']} + {p['goal_topic']} -> {p['command_topic']} at "
                               f"{p['rate_hz']:g} Hz (velocity {p['velocity_scale']:g}, acceleration "
                               f"{p['acceleration_scale']:g}, jerk {p['jerk_scale']:g} of the limits)")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ callbacks
    def _on_state(self, msg: JointState) -> None:
        q = finite_positions(self, self.order, msg, self.counts, self.params["state_topic"])
        if q is None:
            return
        self._q, self._q_time = q, self._now()
        if not self.core.started:
            self.core.reset(q)

    def _on_goal(self, msg: PointStamped) -> None:
        try:
            self.core.set_goal([msg.point.x, msg.point.y, msg.point.z])
        except ValueError as exc:
            self.counts["bad_goals"] += 1
            self.get_logger().error(f"ignoring goal on {self.params['goal_topic']}: {exc}", throttle_duration_sec=2.0)

    def _on_sent(self, msg: Float64MultiArray) -> None:
        sent = np.asarray(msg.data, dtype=float)
        if sent.shape != (self.robot.n_joints,) or not np.all(np.isfinite(sent)):
            return
        self._sent = [*self._sent[-1:], (self._now(), sent)]
        self._sent_new = True

    def _on_timer(self) -> None:
        if not self.core.started:
            self.counts["no_state"] += 1
            return
        if self._sent_new and self._proposals:
            self._sent_new = False
            t, sent = self._sent[-1]
            tol = self.core.config.follow_tolerance
            if all(np.max(np.abs(sent - p)) > tol for p in self._proposals):
                v = None
                if len(self._sent) == 2 and t > self._sent[0][0]:
                    v = (sent - self._sent[0][1]) / max(t - self._sent[0][0], self.period)
                self.core.sync(sent, v)
                self.counts["followed"] += 1
        fresh = self._q is not None and self._now() - self._q_time <= self.core.config.max_state_age
        cmd = self.core.step(self._q if fresh else None)
        self._proposals.append(cmd)
        self.cmd_pub.publish(array_msg(cmd, label="position"))
        self.counts["commands"] += 1

    def _on_diagnostics(self) -> None:
        status = DiagnosticStatus(name=NODE_NAME, hardware_id=self.robot.name)
        if not self.core.started:
            status.level, status.message = DiagnosticStatus.WARN, "waiting for the joint state"
        elif self.core.goal is None:
            status.level, status.message = DiagnosticStatus.OK, "holding (no goal)"
        else:
            status.level, status.message = DiagnosticStatus.OK, "reaching"
        values = dict(self.counts)
        if self.core.goal is not None and self._q is not None:
            values["distance_m"] = self.core.distance(self._q)
            values["ik_error_m"] = self.core.ik_error
        publish_status(self, self.diag_pub, status, values)


def main(args=None) -> int:
    return run_node(BaselineControllerNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
