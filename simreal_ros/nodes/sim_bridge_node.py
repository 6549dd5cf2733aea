"""``sim_bridge`` node: the MuJoCo arm behind the same interface as the real arm's ROS 2 driver.

Publishes ``sensor_msgs/JointState`` (position, velocity, effort; stamped at acquisition) on
``joint_state_topic`` at ``publish_rate_hz``; accepts ros2_control forward-command style
``std_msgs/Float64MultiArray`` on ``command_topic`` (positions) or ``effort_command_topic``
(torques), whichever ``command_mode`` makes active. Non-finite, wrong-length or
inactive-controller commands are rejected and counted; the arm keeps its last target.

Also: ground truth (noise-free, for evaluation only) on ``ground_truth_topic``; the goal on
``goal_topic`` (``geometry_msgs/PointStamped``, latched: transient-local); services
``~/reset`` (home pose, new randomization draw, new goal) and ``~/next_goal`` (new sampled
goal), both ``std_srvs/Trigger``; a goal request topic (``PointStamped``) to set a given goal;
``/diagnostics`` (sim time, real-time factor, dropped measurements, rejected commands).

With ``task: push`` the scene has the puck, the pusher tool and the goal on the table: the goal
is a point on the table, and the puck's pose comes the way a lab's tracker gives it
(``geometry_msgs/PoseStamped`` on ``object_topic``, stamped at acquisition, at the task's
tracker rate with its noise, latency and drops: :mod:`simreal_ros.sim.tracker`).

Timing (see :mod:`simreal_ros.sim.driver`): ``paced`` follows the wall clock and stamps with
ROS time; ``unpaced`` runs as fast as the executor allows, publishes ``/clock`` every period
and stamps with sim time (consumers set ``use_sim_time``); ``sync_period > 0`` adds the
command lockstep that makes runs reproducible. The bridge's own timers are steady (wall)
timers in both modes: it is the clock source, so it never waits on ``/clock``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from simreal_ros.nodes.common import DIAG_LEVEL, joint_state_msg, run_node, sec_to_stamp
from simreal_ros.nodes.params import Param, ParameterError, declare_and_read
from simreal_ros.robot import load_robot
from simreal_ros.settings import settings_of
from simreal_ros.sim.driver import KNOBS, UNSET_KNOB, DriverConfig, SimDriver, knob_error, profile_error

NODE_NAME = "sim_bridge"
SPEC = [
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)", read_only=True),
    Param("joint_state_topic", "/joint_states", "sensor_msgs/JointState output (measured)", read_only=True),
    Param("command_topic", "/forward_position_controller/commands", "position targets (Float64MultiArray)",
          read_only=True),
    Param("effort_command_topic", "/forward_effort_controller/commands", "torques (Float64MultiArray)",
          read_only=True),
    Param("ground_truth_topic", "/simreal/sim/ground_truth", "noise-free JointState, for evaluation only",
          read_only=True),
    Param("goal_topic", "/simreal/goal", "goal output (PointStamped, latched)", read_only=True),
    Param("goal_request_topic", "/simreal/sim/goal_request", "PointStamped input: set this goal", read_only=True),
    Param("goal_frame", "base", "frame_id of the published goal", read_only=True),
    Param("object_topic", "/simreal/object_pose", "push task: tracked puck pose output (PoseStamped)",
          read_only=True),
    Param("object_ground_truth_topic", "/simreal/sim/object_ground_truth", "push task: true puck pose every "
          "publish period (PoseStamped), for evaluation only", read_only=True),
    # the driver's settings: type, default, bounds and description declared once in DriverConfig
    *[replace(st, read_only=True) for st in settings_of(DriverConfig)],
    Param("randomization_profile", "nominal", "profile in config/randomization.yaml (nominal, default, wide)",
          check=profile_error, read_only=True),
    *[Param(k, UNSET_KNOB, f"fix the {sec} knob {field} to this value (-1: the profile's range)", low=UNSET_KNOB,
            high=1000.0, check=knob_error, read_only=True) for k, (sec, field) in KNOBS.items()],
    Param("goal", [0.0, 0.0, 0.0], "initial goal [x, y, z] (m, base frame); [0, 0, 0]: sample one", low=-5.0,
          high=5.0, length=3, read_only=True),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
]


class SimBridgeNode(Node):
    """Thin adapter around :class:`SimDriver`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = self.params = declare_and_read(self, SPEC)
        try:
            self.driver = SimDriver(DriverConfig.from_parameters(p), load_robot(p["robot"]))
        except ValueError as exc:
            raise ParameterError(f"sim_bridge parameters: {exc}") from exc
        self.names = list(self.driver.robot.joint_names)
        self.unpaced = p["timing"] == "unpaced"
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.js_pub = self.create_publisher(JointState, p["joint_state_topic"], reliable)
        self.truth_pub = self.create_publisher(JointState, p["ground_truth_topic"], reliable)
        self.goal_pub = self.create_publisher(PointStamped, p["goal_topic"], latched)
        push = self.driver.world is not None
        self.object_pub = self.create_publisher(PoseStamped, p["object_topic"], reliable) if push else None
        self.object_truth_pub = (self.create_publisher(PoseStamped, p["object_ground_truth_topic"], reliable)
                                 if push else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", 10) if self.unpaced else None
        cmd_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)  # lockstep: never lose one
        self.create_subscription(Float64MultiArray, p["command_topic"], lambda m: self._on_command(m, "position"),
                                 cmd_qos)
        self.create_subscription(Float64MultiArray, p["effort_command_topic"],
                                 lambda m: self._on_command(m, "effort"), cmd_qos)
        self.create_subscription(PointStamped, p["goal_request_topic"], self._on_goal_request, reliable)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/next_goal", self._on_next_goal)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        # paced: a timer at the publish period; unpaced: as fast as the executor allows
        self.timer = self.create_timer(0.0 if self.unpaced else self.driver.period, self._on_timer, clock=steady)
        self.wait_timer = None
        if self.unpaced and p["sync_period"] > 0:  # while the lockstep waits, poll slowly for its timeout
            self.wait_timer = self.create_timer(min(0.01, p["sync_timeout"] / 10), self._on_wait_timer,
                                                clock=steady)
        self.create_timer(p["diagnostics_period"], self._on_diagnostics, clock=steady)
        self._ros_minus_mono = 0.0  # paced: ROS time - monotonic time, read at each tick
        # the wall clock is anchored at the first timer tick (due_steps), not during start-up
        self._publish_goal()
        self.get_logger().info(
            f"{p['timing']} sim at {p['publish_rate_hz']:g} Hz ({p['command_mode']} commands on "
            f"{p['command_topic'] if p['command_mode'] == 'position' else p['effort_command_topic']}), "
            f"task {p['task']}, randomization '{p['randomization_profile']}', seed {p['seed']}"
            + (f", hidden real arm {p['real_arm']}" if p["real_arm"] else ""))

    # ------------------------------------------------------------------ stepping
    def _stamp(self, t: float):
        """Header stamp of driver time ``t``: sim time (unpaced), or (paced) the ROS time at which the
        pacing schedules ``t`` -- smooth, never ahead of the publish time, shifted after a skipped stall."""
        if self.unpaced:
            return sec_to_stamp(t)
        if not self.driver.started:  # before the first tick
            return self.get_clock().now().to_msg()
        return sec_to_stamp(self.driver.wall_time_of(t) + self._ros_minus_mono)

    def _clock_offset(self) -> None:
        """ROS (system) time - monotonic time; kept constant (smooth stamps) unless the system clock
        was stepped by more than 1 ms."""
        if not self.unpaced:
            off = self.get_clock().now().nanoseconds * 1e-9 - time.monotonic()
            if abs(off - self._ros_minus_mono) > 1e-3:
                self._ros_minus_mono = off

    def _on_timer(self) -> None:
        n = self.driver.due_steps(time.monotonic())
        if n == 0 and self.unpaced:
            self.timer.cancel()  # the lockstep waits for a command: stop spinning on an idle timer
            return
        self._run(n)

    def _run(self, n: int) -> None:
        self._clock_offset()
        try:
            self._steps(n)
        except _rclpy.RCLError:
            if self.context.ok():
                raise
            # SIGINT/SIGTERM shut the context down in the middle of a (long, unpaced) callback

    def _steps(self, n: int) -> None:
        for _ in range(n):
            tick = self.driver.step()
            if self.clock_pub is not None:
                self.clock_pub.publish(ClockMsg(clock=sec_to_stamp(tick.time)))
            m = tick.measurement
            if m is not None:
                self.js_pub.publish(joint_state_msg(self.names, self._stamp(m.stamp), m.position, m.velocity,
                                                    m.effort))
            t = tick.truth
            self.truth_pub.publish(joint_state_msg(self.names, self._stamp(t.stamp), t.position, t.velocity,
                                                   t.effort))
            for obj in tick.objects:
                self.object_pub.publish(self._pose(obj.stamp, obj.position, obj.orientation))
            if self.object_truth_pub is not None:
                p, q = self.driver.world.puck_pose()
                self.object_truth_pub.publish(self._pose(tick.time, p, q))

    def _pose(self, stamp: float, position, orientation) -> PoseStamped:
        pose = PoseStamped()
        pose.header.stamp = self._stamp(stamp)
        pose.header.frame_id = self.params["goal_frame"]
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in orientation)
        return pose

    def _on_wait_timer(self) -> None:
        if self.timer.is_canceled():
            n = self.driver.due_steps(time.monotonic())  # > 0 once the lockstep timed out
            if n:
                self._run(n)
                self.timer.reset()

    # ------------------------------------------------------------------ inputs
    def _on_command(self, msg: Float64MultiArray, mode: str) -> None:
        if not self.driver.command(msg.data, mode):
            self.get_logger().warn(f"rejected {mode} command: {self.driver.last_rejection} (keeping the last "
                                   "target)", throttle_duration_sec=2.0)
        elif self.timer.is_canceled():
            self.timer.reset()

    def _publish_goal(self) -> None:
        msg = PointStamped()
        msg.header.stamp = self._stamp(self.driver.time)
        msg.header.frame_id = self.params["goal_frame"]
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in self.driver.goal)
        self.goal_pub.publish(msg)

    def _on_goal_request(self, msg: PointStamped) -> None:
        try:
            self.driver.set_goal([msg.point.x, msg.point.y, msg.point.z])
        except ValueError as exc:
            self.get_logger().error(f"ignoring goal request: {exc}")
            return
        self._publish_goal()

    def _on_reset(self, _req, resp):
        goal = self.driver.reset()
        self._publish_goal()
        resp.success, resp.message = True, f"episode {self.driver.episode}, goal {np.round(goal, 4).tolist()}"
        return resp

    def _on_next_goal(self, _req, resp):
        goal = self.driver.next_goal()
        self._publish_goal()
        resp.success, resp.message = True, f"goal {np.round(goal, 4).tolist()}"
        return resp

    def _on_diagnostics(self) -> None:
        d = self.driver.diagnostics(time.monotonic())
        level, message = self.driver.health(d)
        status = DiagnosticStatus(name=f"{NODE_NAME}: MuJoCo {self.driver.robot.name}", hardware_id="sim",
                                  level=DIAG_LEVEL[level],
                                  message=message)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in d.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self._stamp(self.driver.time)
        self.diag_pub.publish(arr)


def main(args=None) -> int:
    """Stops cleanly on SIGINT/SIGTERM even mid-step (see :mod:`simreal_ros.nodes.shutdown`)."""
    return run_node(SimBridgeNode, args, NODE_NAME)


if __name__ == "__main__":
    raise SystemExit(main())
