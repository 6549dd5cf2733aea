"""``policy_executor`` node: runs a policy bundle on the state estimate and proposes commands.

Subscribes to the state estimate (``sensor_msgs/JointState``; ``/joint_states`` works too)
and the goal (``geometry_msgs/PointStamped``, or ``PoseStamped`` with ``goal_type: pose``);
runs :class:`~simreal_ros.policy.executor.PolicyExecutor` at the manifest's rate and publishes
the proposed command (``std_msgs/Float64MultiArray``, robot joint order) to the shield. With
``trigger: estimate`` (the default) a cycle runs when a new state arrives and a cycle is due
(:class:`~simreal_ros.policy.executor.CycleGate`), so the state is as fresh as the transport
makes it; a state already older than ``max_state_age`` starts no cycle (after a stall the
inputs arrive as a burst of old samples and then the fresh ones: the cycle waits for those
instead of skipping as stale); a timer of the same period steps when no state-triggered cycle
ran for 1.5 periods (it is reset by every state-triggered cycle, so it wakes the node only when
the states stop).
With ``trigger: timer`` a free-running timer steps. Skipped cycles publish nothing. A sustained
out-of-distribution or drift alarm (:mod:`simreal_ros.policy.drift`) publishes its reason on the revert topic. Every cycle (skipped ones
too) publishes what it computed on ``record_topic`` (:mod:`simreal_ros.policy.record`: stamps,
skip reason, observation, raw and clipped action), and the bundle's identity (name, content
hash, terms, action semantics) is latched as JSON on ``bundle_topic``: what ``simreal dataset``
builds transitions from. ``/diagnostics`` carries rate, compute and state-age p50/p99, OOD
score and skip counters.

The node subscribes to the inputs its bundle's observation terms declare
(:data:`~simreal_ros.policy.observation.TERM_INPUTS`): the state and the goal, and for the push
task the tracked object pose (``geometry_msgs/PoseStamped`` on ``object_topic``, stamped at
acquisition; a pose older than ``max_object_age`` skips the cycle). A bundle whose inputs the
node cannot provide (an empty topic, or an input it has no subscription for) refuses to start,
naming them. An exploration family (a ``latent`` observation term, ``simreal train --explore N``)
runs the code of the ``latent`` parameter (0..N-1; -1, the default, is "not provided": such a
bundle refuses to start, naming it); ``std_msgs/Int32`` messages on ``latent_topic`` switch the
code while running (``simreal explore`` cycles it per episode; an out-of-range code is ignored
with an error).

A bundle that does not match the robot (or a bad parameter) stops the process at start with
exit status 1 and a message naming both sides.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int32, String

from simreal_ros.nodes.common import (
    DIAG_LEVEL,
    GOAL_QOS,
    LATEST_STATE_QOS,
    JointOrder,
    publish_status,
    run_node,
    stamp_to_sec,
    subscribe_goal,
    take_joint_state,
)
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.nodes.wire import Float64ArrayEncoder, JointStateDecoder
from simreal_ros.policy.bundle import BundleError, content_hash, load_bundle
from simreal_ros.policy.executor import SKIP_REASONS, CycleGate, ExecutorConfig
from simreal_ros.policy.node_inputs import node_executor
from simreal_ros.policy.record import RecordBuffer, bundle_identity
from simreal_ros.resources import ResourceNotFoundError, resource
from simreal_ros.robot import load_robot
from simreal_ros.rollout.stage import policy_hash
from simreal_ros.settings import from_settings, settings_of

NODE_NAME = "policy_executor"
DEFAULT_BUNDLE = ("policies", "reach_default")

#: The node's parameters: its wiring, then every setting of :class:`ExecutorConfig` (default,
#: bounds and description declared there). All are read once at start.
SPEC = [replace(s, read_only=True) for s in (
    Param("bundle", "", "policy bundle directory; empty: the shipped <share>/policies/reach_default"),
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)"),
    Param("state_topic", "/simreal/state_estimate", "sensor_msgs/JointState input (estimate or /joint_states)"),
    Param("goal_topic", "/simreal/goal", "goal position of the flange in the base frame"),
    Param("goal_type", "point", "goal message type", choices=("point", "pose")),
    Param("object_topic", "/simreal/object_pose", "tracked object pose (PoseStamped), subscribed when the bundle's "
          "observation needs it; '' = not available"),
    Param("command_topic", "/simreal/policy/command", "proposed command to the shield (Float64MultiArray)"),
    Param("revert_topic", "/simreal/shield/revert", "std_msgs/String revert requests (OOD alarms)"),
    Param("record_topic", "/simreal/policy/record", "what each cycle computed (Float64MultiArray, labelled fields, "
          "simreal_ros.policy.record); '' = not published"),
    Param("bundle_topic", "/simreal/policy/bundle", "the bundle's identity (std_msgs/String JSON, latched); '' = not "
          "published"),
    Param("latent", -1, "exploration families (a 'latent' observation term): the code to run, 0..N-1; -1: not "
          "provided (such a bundle refuses to start)", low=-1, high=63),
    Param("latent_topic", "/simreal/policy/latent", "std_msgs/Int32 latent codes that switch an exploration "
          "family's policy while running; '' = none"),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
    *settings_of(ExecutorConfig),
)]
_CORE_KEYS = tuple(s.name for s in settings_of(ExecutorConfig))


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
        config = from_settings(ExecutorConfig, {k: p[k] for k in _CORE_KEYS}, "parameters")
        self.params = p
        self.robot = load_robot(p["robot"])
        path = Path(p["bundle"]) if p["bundle"] else _default_bundle()
        bundle = load_bundle(path, self.robot)
        m = bundle.manifest
        self.policy_hash = policy_hash(bundle.directory)  # names the policy in /diagnostics (and so in bags)
        period = 1.0 / m.control_rate_hz
        self.policy = node_executor(bundle, self.robot, config, p, path)  # refuses inputs it cannot have
        self.order = JointOrder(self.robot.joint_names)
        self._decoder = JointStateDecoder()  # the hot path as CDR bytes (nodes.wire)
        self._cmd_encoder = Float64ArrayEncoder([(self.policy.command_type, self.robot.n_joints, self.robot.n_joints)])
        self.cmd_pub = self.create_publisher(Float64MultiArray, p["command_topic"], 10)
        self.revert_pub = self.create_publisher(String, p["revert_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.record_pub = self.record = None
        if p["record_topic"]:  # one preallocated record, refilled every cycle, and its fixed layout
            self.record = RecordBuffer(m.obs_dim, m.action_dim, SKIP_REASONS)
            self._record_encoder = Float64ArrayEncoder(self.record.fields)
            self.record_pub = self.create_publisher(Float64MultiArray, p["record_topic"], 50)
        if p["bundle_topic"]:
            self.bundle_pub = self.create_publisher(String, p["bundle_topic"], GOAL_QOS)  # latched
            self.bundle_pub.publish(String(data=bundle_identity(m, bundle.directory, content_hash(bundle),
                                                                self.robot.name, SKIP_REASONS)))
        self.create_subscription(JointState, p["state_topic"], self._on_state, LATEST_STATE_QOS, raw=True)
        goal_type = PoseStamped if p["goal_type"] == "pose" else PointStamped
        subscribe_goal(self, goal_type, p["goal_topic"], self._on_goal)  # latched or plain publishers
        if "object_pose" in self.policy.inputs:
            self.create_subscription(PoseStamped, p["object_topic"], self._on_object, LATEST_STATE_QOS)
        if "latent" in self.policy.inputs and p["latent_topic"]:
            subscribe_goal(self, Int32, p["latent_topic"], self._on_latent)  # latched or plain publishers
        # steady timer on wall time; with use_sim_time the timer follows the ROS (sim) clock
        sim_time = self.get_parameter("use_sim_time").value
        self.gate = CycleGate(period) if config.trigger == "estimate" else None
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
    def _on_state(self, buf: bytes) -> None:
        try:
            msg = take_joint_state(self._decoder, buf)
            q, dq, _ = self.order.arrays(msg)
            if dq is None:
                raise ValueError(f"JointState has {len(msg.velocity)} velocities for {len(msg.name)} names; the "
                                 "policy needs velocities")
        except ValueError as exc:
            self.bad_states += 1
            self.get_logger().error(f"ignoring state on {self.params['state_topic']}: {exc}",
                                    throttle_duration_sec=2.0)
            return
        stamp = msg.stamp
        if stamp == 0.0:  # unstamped publisher: the receipt time is the best we have
            stamp = self.get_clock().now().nanoseconds * 1e-9
        if not self.policy.update_state(q, dq, stamp):
            self.get_logger().warn("ignoring non-finite joint state", throttle_duration_sec=2.0)
            return
        if self.gate is not None:
            now = self.get_clock().now().nanoseconds * 1e-9
            # a state already too old to act on does not use up the cycle: a fresher one may follow
            # at once (the rest of a burst after a stall); the watchdog still steps (and counts the
            # skip) when none comes
            if self.gate.due(now) and self.policy.state_fresh(now):
                self._cycle(now)
                self.timer.reset()  # the watchdog fires only when no cycle follows: one wake-up less per cycle

    def _on_object(self, msg: PoseStamped) -> None:
        pt = msg.pose.position
        stamp = stamp_to_sec(msg.header.stamp) or self.get_clock().now().nanoseconds * 1e-9
        if not self.policy.update_object([pt.x, pt.y, pt.z], stamp):
            self.get_logger().warn(f"ignoring non-finite object pose on {self.params['object_topic']}",
                                   throttle_duration_sec=2.0)

    def _on_latent(self, msg: Int32) -> None:
        if msg.data == self.policy.latent:
            return
        try:
            self.policy.set_latent(int(msg.data))
        except ValueError as exc:
            self.get_logger().error(f"ignoring latent on {self.params['latent_topic']}: {exc}")
            return
        self.get_logger().info(f"latent code {msg.data}")

    def _on_goal(self, msg) -> None:
        pt = msg.point if isinstance(msg, PointStamped) else msg.pose.position
        try:
            self.policy.set_goal([pt.x, pt.y, pt.z])
        except ValueError as exc:
            self.get_logger().error(f"ignoring goal on {self.params['goal_topic']}: {exc}", throttle_duration_sec=2.0)

    def _on_timer(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        if self.gate is None or self.gate.overdue(now):  # state-triggered: only the watchdog's cycle
            self._cycle(now)

    def _cycle(self, now: float) -> None:
        res = self.policy.step(now)
        if self.gate is not None:
            self.gate.ran(now)
        if res.command is not None:  # first: the shield waits for it, the record only goes to the bag
            self.cmd_pub.publish(self._cmd_encoder.encode(res.command))
        if self.record_pub is not None:
            ex = self.policy
            self.record_pub.publish(self._record_encoder.encode(self.record.fill(res, ex.state_stamp, ex.object_stamp)))
        if res.command is None and res.skipped in ("stale_state", "deadline_missed", "non_finite_action"):
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
        level, message = ex.health(s, cycles, commands)
        status = DiagnosticStatus(name=f"{NODE_NAME}: {ex.manifest.name}", hardware_id=self.robot.name,
                                  level=DIAG_LEVEL[level], message=message)
        s["bad_state_messages"] = self.bad_states
        s["policy_hash"] = self.policy_hash
        publish_status(self, self.diag_pub, status, s)


NODE_CLASS = PolicyExecutorNode  # for the in-process graph runner (simreal_ros.bringup.runner)


def main(args=None) -> int:
    return run_node(PolicyExecutorNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
