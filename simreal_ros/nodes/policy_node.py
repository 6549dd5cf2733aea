"""``policy_executor`` node: runs a policy bundle on the state estimate and proposes commands.

Subscribes to the state estimate (``sensor_msgs/JointState``; ``/joint_states`` works too)
and the goal (``geometry_msgs/PointStamped``, or ``PoseStamped`` with ``goal_type: pose``);
every control period (the manifest's rate) runs :class:`~simreal_ros.policy.executor.PolicyExecutor`
and publishes the proposed command (``std_msgs/Float64MultiArray``, robot joint order) to the
shield. Skipped cycles publish nothing. A sustained out-of-distribution alarm publishes its
reason on the revert topic. ``/diagnostics`` carries rate, compute and state-age p50/p99, OOD
score and skip counters.

A bundle that does not match the robot (or a bad parameter) stops the process at start with
exit status 1 and a message naming both sides.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from simreal_ros.nodes.common import JointOrder, array_msg, run_node, stamp_to_sec, subscribe_goal
from simreal_ros.nodes.params import Param, ParameterError, declare_and_read
from simreal_ros.policy.bundle import BundleError, load_bundle
from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
from simreal_ros.resources import ResourceNotFoundError, resource
from simreal_ros.robot import load_robot

NODE_NAME = "policy_executor"
DEFAULT_BUNDLE = ("policies", "reach_default")

SPEC = [
    Param("bundle", "", "policy bundle directory; empty: the shipped <share>/policies/reach_default", read_only=True),
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)", read_only=True),
    Param("state_topic", "/simreal/state_estimate", "sensor_msgs/JointState input (estimate or /joint_states)",
          read_only=True),
    Param("goal_topic", "/simreal/goal", "goal position of the flange in the base frame", read_only=True),
    Param("goal_type", "point", "goal message type", choices=("point", "pose"), read_only=True),
    Param("command_topic", "/simreal/policy/command", "proposed command to the shield (Float64MultiArray)",
          read_only=True),
    Param("revert_topic", "/simreal/shield/revert", "std_msgs/String revert requests (OOD alarms)", read_only=True),
    Param("max_state_age", 0.05, "s; an older state skips the cycle", low=0.001, high=1.0),
    Param("deadline_fraction", 0.5, "compute deadline as a fraction of the control period", low=0.01, high=1.0),
    Param("ood_threshold", 8.0, "z-score above which an observation term is out of distribution", low=0.5,
          high=1000.0),
    Param("ood_window", 10, "cycles in the OOD window", low=1, high=10000),
    Param("ood_min_count", 5, "excursions within the window that raise the OOD alarm", low=1, high=10000),
    Param("ood_revert", True, "request the shield's revert on an OOD alarm"),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
]


def _default_bundle() -> Path:
    try:
        return resource(*DEFAULT_BUNDLE)
    except ResourceNotFoundError as exc:
        raise BundleError(f"parameter 'bundle' is empty and the shipped default bundle is missing ({exc}); "
                          "pass bundle:=<dir> or produce it with `simreal train`") from exc


class PolicyExecutorNode(Node):
    """Thin adapter around :class:`PolicyExecutor`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_and_read(self, SPEC)
        if p["ood_min_count"] > p["ood_window"]:
            raise ParameterError(f"parameter 'ood_min_count' = {p['ood_min_count']}: must not exceed "
                                 f"'ood_window' = {p['ood_window']}")
        self.params = p
        self.robot = load_robot(p["robot"])
        path = Path(p["bundle"]) if p["bundle"] else _default_bundle()
        bundle = load_bundle(path, self.robot)
        m = bundle.manifest
        period = 1.0 / m.control_rate_hz
        self.policy = PolicyExecutor(bundle, self.robot, ExecutorConfig(
            max_state_age=p["max_state_age"], compute_deadline=p["deadline_fraction"] * period,
            ood_threshold=p["ood_threshold"], ood_window=p["ood_window"], ood_min_count=p["ood_min_count"],
            ood_revert=p["ood_revert"]))
        self.order = JointOrder(self.robot.joint_names)
        self.cmd_pub = self.create_publisher(Float64MultiArray, p["command_topic"], 10)
        self.revert_pub = self.create_publisher(String, p["revert_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, p["state_topic"], self._on_state, qos_profile_sensor_data)
        goal_type = PoseStamped if p["goal_type"] == "pose" else PointStamped
        subscribe_goal(self, goal_type, p["goal_topic"], self._on_goal)  # latched or plain publishers
        # steady timer on wall time; with use_sim_time the timer follows the ROS (sim) clock
        sim_time = self.get_parameter("use_sim_time").value
        self.timer = self.create_timer(period, self._on_timer,
                                       clock=None if sim_time else Clock(clock_type=ClockType.STEADY_TIME))
        self.diag_timer = self.create_timer(p["diagnostics_period"], self._on_diagnostics)
        self.bad_states = 0
        self._last_counts = (0, 0)
        self.get_logger().info(
            f"policy '{m.name}' from {bundle.directory} ({bundle.backend.name}, {m.control_rate_hz:g} Hz, "
            f"obs {m.obs_dim}, action {m.action_type}); {p['state_topic']} + {p['goal_topic']} -> "
            f"{p['command_topic']}")

    # ------------------------------------------------------------------ callbacks
    def _on_state(self, msg: JointState) -> None:
        try:
            q, dq, _ = self.order.arrays(msg)
            if dq is None:
                raise ValueError(f"JointState has {len(msg.velocity)} velocities for {len(msg.name)} names; the "
                                 "policy needs velocities")
        except ValueError as exc:
            self.bad_states += 1
            self.get_logger().error(f"ignoring state on {self.params['state_topic']}: {exc}",
                                    throttle_duration_sec=2.0)
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:  # unstamped publisher: the receipt time is the best we have
            stamp = self.get_clock().now().nanoseconds * 1e-9
        if not self.policy.update_state(q, dq, stamp):
            self.get_logger().warn("ignoring non-finite joint state", throttle_duration_sec=2.0)

    def _on_goal(self, msg) -> None:
        pt = msg.point if isinstance(msg, PointStamped) else msg.pose.position
        try:
            self.policy.set_goal([pt.x, pt.y, pt.z])
        except ValueError as exc:
            self.get_logger().error(f"ignoring goal on {self.params['goal_topic']}: {exc}", throttle_duration_sec=2.0)

    def _on_timer(self) -> None:
        res = self.policy.step(self.get_clock().now().nanoseconds * 1e-9)
        if res.command is not None:
            self.cmd_pub.publish(array_msg(res.command, label=res.command_type))
        elif res.skipped in ("stale_state", "deadline_missed", "non_finite_action"):
            age = "n/a" if res.state_age is None else f"{1e3 * res.state_age:.1f} ms"
            self.get_logger().warn(f"cycle skipped: {res.skipped} (state age {age}, compute "
                                   f"{1e3 * res.compute_time:.2f} ms)", throttle_duration_sec=2.0)
        if res.revert_reason:
            self.get_logger().error(res.revert_reason)
            self.revert_pub.publish(String(data=res.revert_reason))

    def _on_diagnostics(self) -> None:
        ex = self.policy
        s = ex.stats()
        cycles, commands = s["cycles"] - self._last_counts[0], s["commands"] - self._last_counts[1]
        self._last_counts = (s["cycles"], s["commands"])
        status = DiagnosticStatus(name=f"{NODE_NAME}: {ex.manifest.name}", hardware_id=self.robot.name)
        if cycles and not commands:
            worst = max(((r, c) for r, c in ex.skipped.items()), key=lambda rc: rc[1])[0]
            status.level, status.message = DiagnosticStatus.ERROR, f"no commands: every cycle skipped ({worst})"
        elif s.get("ood_sustained"):
            status.level, status.message = DiagnosticStatus.WARN, "observation out of training distribution"
        elif commands < cycles:
            status.level, status.message = DiagnosticStatus.WARN, f"{cycles - commands} of {cycles} cycles skipped"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        s["bad_state_messages"] = self.bad_states
        status.values = [KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in s.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


NODE_CLASS = PolicyExecutorNode  # for the in-process graph runner (simreal_ros.bringup.runner)


def main(args=None) -> int:
    return run_node(PolicyExecutorNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
