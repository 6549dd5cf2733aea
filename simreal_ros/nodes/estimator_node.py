"""``state_estimator`` node: filtered joint state with uncertainty and a belief over hidden dynamics.

Subscribes to raw joint samples (``sensor_msgs/JointState`` on ``/joint_states``, stamped at
acquisition) and runs :class:`~simreal_ros.estimator.StateEstimator`. Publishes:

* ``/simreal/state_estimate`` (``sensor_msgs/JointState``): filtered position, velocity and
  effort in the robot's joint order, predicted to ``stamp + latency`` (input-rate mode: one per
  sample, or at most ``max_estimate_rate_hz`` on the sample clock) or to
  the node clock's now (timer mode, ``publish_rate_hz > 0``; nothing is published while the
  newest sample is older than ``kalman.max_gap``); the header stamp is that time.
* ``/simreal/state_covariance`` (``std_msgs/Float64MultiArray``): an ``n x 5`` row-major
  matrix; ``layout.dim[0]`` is labelled with the joint names, ``layout.dim[1]`` with the
  columns ``var_position,cov_position_velocity,var_velocity,var_acceleration,var_effort``.
  With an estimate, at most ``covariance_rate_hz`` per second of its time (0: with every estimate).
* ``/simreal/belief`` (``std_msgs/Float64MultiArray``): a ``2 x (3n+1)`` row-major matrix;
  row 0 the estimates, row 1 their standard deviations. ``layout.dim[0]`` is labelled
  ``estimate,std``; ``layout.dim[1]`` lists the parameters with units: viscous friction per
  joint (N m s/rad), Coulomb friction per joint (N m), payload mass (kg), armature per joint
  (kg m^2). For the 7-joint arm: 44 values.
* ``/diagnostics``: update outcomes (accepted, duplicates, out-of-order, restarts, gap
  resets), outliers, belief updates, the payload estimate.

Every parameter is declared with its range and checked at start (read-only afterwards); a
bad value stops the process with exit status 1 naming the key and the allowed range.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from simreal_ros.estimator.estimator import (
    COVARIANCE_FIELDS,
    EstimatorConfig,
    StateEstimator,
    covariance_vector,
    estimator_settings,
)
from simreal_ros.nodes.common import (
    JointOrder,
    publish_status,
    run_node,
    sec_nsec,
    take_joint_state,
)
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.nodes.wire import Float64ArrayEncoder, JointStateDecoder, JointStateEncoder
from simreal_ros.policy.executor import CycleGate
from simreal_ros.robot import load_robot

NODE_NAME = "state_estimator"

#: The node's parameters: its wiring, then every setting of the core (EstimatorConfig with its
#: kalman.* and belief.* sections; default, bounds and description declared there). All are
#: read once at start.
SPEC = [replace(s, read_only=True) for s in (
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)"),
    Param("input_topic", "/joint_states", "sensor_msgs/JointState input (raw, stamped at acquisition)"),
    Param("estimate_topic", "/simreal/state_estimate", "sensor_msgs/JointState output"),
    Param("covariance_topic", "/simreal/state_covariance", "Float64MultiArray n x 5 output"),
    Param("belief_topic", "/simreal/belief", "Float64MultiArray 2 x (3n+1) output"),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
    *estimator_settings(),
)]
_CORE_KEYS = tuple(s.name for s in estimator_settings())


def matrix_encoder(shape: tuple[int, int], labels: tuple[str, str]) -> Float64ArrayEncoder:
    """A row-major 2-D Float64MultiArray of this shape with labelled dimensions, as CDR bytes."""
    rows, cols = shape
    return Float64ArrayEncoder([(labels[0], rows, rows * cols), (labels[1], cols, cols)])


class StateEstimatorNode(Node):
    """Thin adapter around :class:`StateEstimator`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_and_read(self, SPEC)
        self.params = p
        self.robot = load_robot(p["robot"])
        self.core = StateEstimator(self.robot, EstimatorConfig.from_mapping({k: p[k] for k in _CORE_KEYS}))
        self.order = JointOrder(self.robot.joint_names)
        self.names = list(self.robot.joint_names)
        self._cov_labels = (",".join(self.names), ",".join(COVARIANCE_FIELDS))
        self._belief_labels = ("estimate,std", ",".join(self.core.belief_names))
        self.est_pub = self.create_publisher(JointState, p["estimate_topic"], 10)
        self.cov_pub = self.create_publisher(Float64MultiArray, p["covariance_topic"], 10)
        self.belief_pub = self.create_publisher(Float64MultiArray, p["belief_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # raw: samples are read from their CDR bytes and estimates written as such (nodes.wire): rclpy's
        # message objects were the larger part of this node's CPU per sample
        self._decoder = JointStateDecoder()
        self._est_encoder = JointStateEncoder(self.names)
        self._cov_encoder = matrix_encoder((len(self.names), len(COVARIANCE_FIELDS)), self._cov_labels)
        self._belief_encoder = matrix_encoder((2, len(self.core.belief_names)), self._belief_labels)
        self.create_subscription(JointState, p["input_topic"], self._on_joint_state, qos_profile_sensor_data, raw=True)
        if p["publish_rate_hz"] > 0:
            self.create_timer(1.0 / p["publish_rate_hz"], self._on_timer)
        self.create_timer(p["diagnostics_period"], self._on_diagnostics)
        self._belief_period = 1.0 / p["belief_rate_hz"] if p["belief_rate_hz"] > 0 else 0.0
        # on the sample clock: the grid keeps the mean rate, a restarted stream restarts it
        self._estimate_gate = CycleGate(1.0 / p["max_estimate_rate_hz"]) if p["max_estimate_rate_hz"] > 0 else None
        self._belief_published: tuple[int, float] = (0, -np.inf)
        self._cov_period = 1.0 / p["covariance_rate_hz"] if p["covariance_rate_hz"] > 0 else 0.0
        self._cov_published = -np.inf
        self.bad_messages = 0
        self.stale_skips = 0
        self.get_logger().info(f"{p['input_topic']} -> {p['estimate_topic']}, {p['covariance_topic']}, "
                               f"{p['belief_topic']} (belief {'on' if p['belief_enabled'] else 'off'}, "
                               f"{'input rate' if p['publish_rate_hz'] == 0 else str(p['publish_rate_hz']) + ' Hz'})")

    # ------------------------------------------------------------------ callbacks
    def _on_joint_state(self, buf: bytes) -> None:
        try:
            msg = take_joint_state(self._decoder, buf)
            q, dq, tau = self.order.arrays(msg)
            res = self.core.process(msg.stamp, q, dq, tau)
        except ValueError as exc:
            self.bad_messages += 1
            self.get_logger().error(f"ignoring sample on {self.params['input_topic']}: {exc}",
                                    throttle_duration_sec=2.0)
            return
        if res.outcome in ("restart", "gap_reset"):
            self.get_logger().warn(f"joint state stream {res.outcome.replace('_', ' ')}: filter re-initialised")
            if self._estimate_gate is not None:
                self._estimate_gate = CycleGate(self._estimate_gate.period)
        if res.outcome in ("duplicate", "out_of_order"):
            return
        if self.params["publish_rate_hz"] == 0:
            stamp = self.core.last_stamp
            if self._estimate_gate is None or self._estimate_gate.due(stamp):
                if self._estimate_gate is not None:
                    self._estimate_gate.ran(stamp)
                self._publish_estimate(None)
        self._maybe_publish_belief()

    def _on_timer(self) -> None:
        if not self.core.initialized:
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        if now - self.core.last_stamp > self.core.config.kalman.max_gap:
            self.stale_skips += 1  # no extrapolating a stream that stopped: consumers see it stop too
            return
        self._publish_estimate(now)

    def _publish_estimate(self, t: float | None) -> None:
        est = self.core.estimate(t)
        effort = est.effort if self.core.kf.has_effort else None  # no effort in, none out
        self.est_pub.publish(self._est_encoder.encode(*sec_nsec(est.stamp), est.position, est.velocity, effort))
        # at covariance_rate_hz of the estimates' time (a stamp before the last one is a restart)
        if self._cov_period > 0 and 0.0 <= est.stamp - self._cov_published < self._cov_period - 1e-9:
            return
        self._cov_published = est.stamp
        self.cov_pub.publish(self._cov_encoder.encode(covariance_vector(est)))

    def _maybe_publish_belief(self) -> None:
        """At ``belief_rate_hz`` of sample time (the prior too, so consumers never wait for
        motion), or at every belief update when the rate is 0."""
        last_updates, last_stamp = self._belief_published
        stamp = self.core.last_stamp
        if self._belief_period > 0 and 0.0 <= stamp - last_stamp < self._belief_period - 1e-9:
            return  # before the belief is read: not due (a stamp before the last publication is a restart)
        belief = self.core.belief()
        if belief is None or (self._belief_period <= 0 and belief.updates == last_updates):
            return
        self._belief_published = (belief.updates, stamp)
        self.belief_pub.publish(self._belief_encoder.encode(np.stack([belief.values, belief.std])))

    def _on_diagnostics(self) -> None:
        status = DiagnosticStatus(name=NODE_NAME, hardware_id=self.robot.name)
        counts = self.core.counts()
        if not self.core.initialized:
            status.level, status.message = DiagnosticStatus.WARN, "waiting for joint states"
        else:
            status.level, status.message = DiagnosticStatus.OK, "estimating"
        values: dict[str, object] = {**counts, "bad_messages": self.bad_messages, "stale_skips": self.stale_skips}
        belief = self.core.belief()
        if belief is not None and belief.updates:
            values["payload_kg"] = belief.payload
            values["payload_std_kg"] = float(belief.std[2 * self.robot.n_joints])
        publish_status(self, self.diag_pub, status, values)


NODE_CLASS = StateEstimatorNode  # for the in-process graph runner (simreal_ros.bringup.runner)


def main(args=None) -> int:
    return run_node(StateEstimatorNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
