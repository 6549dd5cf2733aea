"""``state_estimator`` node: filtered joint state with uncertainty and a belief over hidden dynamics.

Subscribes to raw joint samples (``sensor_msgs/JointState`` on ``/joint_states``, stamped at
acquisition) and runs :class:`~simreal_ros.estimator.StateEstimator`. Publishes:

* ``/simreal/state_estimate`` (``sensor_msgs/JointState``): filtered position, velocity and
  effort in the robot's joint order, predicted to ``stamp + latency`` (input-rate mode) or to
  the node clock's now (timer mode, ``publish_rate_hz > 0``; nothing is published while the
  newest sample is older than ``kalman.max_gap``); the header stamp is that time.
* ``/simreal/state_covariance`` (``std_msgs/Float64MultiArray``): an ``n x 5`` row-major
  matrix; ``layout.dim[0]`` is labelled with the joint names, ``layout.dim[1]`` with the
  columns ``var_position,cov_position_velocity,var_velocity,var_acceleration,var_effort``.
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
from dataclasses import fields

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from simreal_ros.estimator.belief import BeliefConfig
from simreal_ros.estimator.estimator import COVARIANCE_FIELDS, EstimatorConfig, StateEstimator, covariance_vector
from simreal_ros.estimator.kalman import KalmanConfig
from simreal_ros.nodes.common import JointOrder, joint_state_msg, run_node, sec_to_stamp, stamp_to_sec
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.robot import load_robot

NODE_NAME = "state_estimator"

#: (description, low, high) of every core setting; defaults come from the core's dataclasses.
_CORE_PARAMS = {
    "kalman": (KalmanConfig(), {
        "position_noise_std": ("rad, position measurement noise", 1e-9, 1.0),
        "velocity_noise_std": ("rad/s, velocity measurement noise", 1e-9, 100.0),
        "effort_noise_std": ("N m, effort measurement noise", 1e-9, 1000.0),
        "jerk_psd": ("(rad/s^3)^2 s, white-jerk process noise", 1e-6, 1e12),
        "effort_rate_psd": ("(N m/s)^2 s, effort random walk", 1e-6, 1e12),
        "initial_acceleration_std": ("rad/s^2, prior at (re)initialisation", 1e-6, 1e4),
        "gate_probability": ("outlier gate: innovations less likely than 1 - this are rejected", 0.5, 0.999999999),
        "max_consecutive_rejects": ("re-initialise a joint after this many rejections in a row", 1, 100000),
        "max_gap": ("s; a longer gap between samples re-initialises the filter", 1e-4, 3600.0),
        "restart_backjump": ("s; a stamp this far back is a restart of the stream", 1e-4, 3600.0),
        "velocity_delay": ("s the measured velocity lags the position (MuJoCo sim: half a physics step)", 0.0, 0.1),
        "position_bias_std": ("rad, unobservable constant sensor offset, added to the reported variance", 0.0, 0.1),
    }),
    "belief": (BeliefConfig(), {
        "window": ("s, half width of the centred window (the belief lags by this)", 0.002, 1.0),
        "update_period": ("s between RLS updates", 1e-4, 10.0),
        "effort_delay": ("s the effort is older than position/velocity (sim: one physics step)", 0.0, 0.5),
        "min_speed": ("rad/s; slower joints are left out of an update (stiction)", 1e-4, 10.0),
        "forgetting": ("RLS forgetting factor per update", 0.5, 1.0),
        "prior_viscous_std": ("N m s/rad, prior std of viscous friction", 1e-6, 1e3),
        "prior_coulomb_std": ("N m, prior std of Coulomb friction", 1e-6, 1e3),
        "prior_payload_std": ("kg, prior std of the payload", 1e-6, 1e3),
        "prior_armature_std": ("kg m^2, prior std of the armature", 1e-6, 1e3),
        "drift_viscous": ("N m s/rad per sqrt(s), random-walk forgetting", 0.0, 1e3),
        "drift_coulomb": ("N m per sqrt(s)", 0.0, 1e3),
        "drift_payload": ("kg per sqrt(s)", 0.0, 1e3),
        "drift_armature": ("kg m^2 per sqrt(s)", 0.0, 1e3),
        "residual_std_floor": ("N m, lower bound of the row weights' residual std", 1e-6, 100.0),
        "residual_std_init": ("N m, initial residual std", 1e-6, 100.0),
        "residual_time_constant": ("s, time constant of the running residual variance", 1e-3, 1e4),
    }),
}


def _core_spec() -> list[Param]:
    out = []
    for section, (defaults, table) in _CORE_PARAMS.items():
        for f in fields(defaults):
            desc, lo, hi = table[f.name]
            out.append(Param(f"{section}.{f.name}", getattr(defaults, f.name), desc, low=lo, high=hi,
                             read_only=True))
    return out


SPEC = [
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)", read_only=True),
    Param("input_topic", "/joint_states", "sensor_msgs/JointState input (raw, stamped at acquisition)",
          read_only=True),
    Param("estimate_topic", "/simreal/state_estimate", "sensor_msgs/JointState output", read_only=True),
    Param("covariance_topic", "/simreal/state_covariance", "Float64MultiArray n x 5 output", read_only=True),
    Param("belief_topic", "/simreal/belief", "Float64MultiArray 2 x (3n+1) output", read_only=True),
    Param("publish_rate_hz", 0.0, "estimate rate (Hz); 0 = at the input rate", low=0.0, high=10000.0,
          read_only=True),
    Param("belief_rate_hz", 10.0, "belief publications per second of sample time; 0 = at every belief update",
          low=0.0,
          high=10000.0, read_only=True),
    Param("latency", 0.0, "s; estimates are predicted this far beyond the sample stamp", low=0.0, high=1.0,
          read_only=True),
    Param("belief_enabled", True, "estimate friction/payload/armature online", read_only=True),
    Param("torque_acceleration", False, "also fuse the acceleration the measured effort produces through the "
          "identified model (needs belief_enabled; about 2x the cost per sample)", read_only=True),
    Param("acceleration_noise_std", 0.5, "rad/s^2, model error of that acceleration", low=1e-6, high=1e4,
          read_only=True),
    Param("torque_acceleration_warmup", 100, "belief updates before the model's acceleration is used", low=0,
          high=1000000, read_only=True),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0, read_only=True),
    *_core_spec(),
]


def matrix_msg(values: np.ndarray, labels: tuple[str, str]) -> Float64MultiArray:
    """A row-major 2-D Float64MultiArray with labelled dimensions."""
    values = np.asarray(values, dtype=float)
    rows, cols = values.shape
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=labels[0], size=rows, stride=rows * cols),
                      MultiArrayDimension(label=labels[1], size=cols, stride=cols)]
    msg.data = values.ravel().tolist()
    return msg


class StateEstimatorNode(Node):
    """Thin adapter around :class:`StateEstimator`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = declare_and_read(self, SPEC)
        self.params = p
        self.robot = load_robot(p["robot"])
        core = {k: v for k, v in p.items() if k.startswith(("kalman.", "belief."))}
        for key in ("belief_enabled", "latency", "torque_acceleration", "acceleration_noise_std",
                    "torque_acceleration_warmup"):
            core[key] = p[key]
        self.core = StateEstimator(self.robot, EstimatorConfig.from_mapping(core))
        self.order = JointOrder(self.robot.joint_names)
        self.names = list(self.robot.joint_names)
        self._cov_labels = (",".join(self.names), ",".join(COVARIANCE_FIELDS))
        self._belief_labels = ("estimate,std", ",".join(self.core.belief_names))
        self.est_pub = self.create_publisher(JointState, p["estimate_topic"], 10)
        self.cov_pub = self.create_publisher(Float64MultiArray, p["covariance_topic"], 10)
        self.belief_pub = self.create_publisher(Float64MultiArray, p["belief_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, p["input_topic"], self._on_joint_state, qos_profile_sensor_data)
        if p["publish_rate_hz"] > 0:
            self.create_timer(1.0 / p["publish_rate_hz"], self._on_timer)
        self.create_timer(p["diagnostics_period"], self._on_diagnostics)
        self._belief_period = 1.0 / p["belief_rate_hz"] if p["belief_rate_hz"] > 0 else 0.0
        self._belief_published: tuple[int, float] = (0, -np.inf)
        self.bad_messages = 0
        self.stale_skips = 0
        self.get_logger().info(f"{p['input_topic']} -> {p['estimate_topic']}, {p['covariance_topic']}, "
                               f"{p['belief_topic']} (belief {'on' if p['belief_enabled'] else 'off'}, "
                               f"{'input rate' if p['publish_rate_hz'] == 0 else str(p['publish_rate_hz']) + ' Hz'})")

    # ------------------------------------------------------------------ callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            q, dq, tau = self.order.arrays(msg)
            res = self.core.process(stamp_to_sec(msg.header.stamp), q, dq, tau)
        except ValueError as exc:
            self.bad_messages += 1
            self.get_logger().error(f"ignoring sample on {self.params['input_topic']}: {exc}",
                                    throttle_duration_sec=2.0)
            return
        if res.outcome in ("restart", "gap_reset"):
            self.get_logger().warn(f"joint state stream {res.outcome.replace('_', ' ')}: filter re-initialised")
        if res.outcome in ("duplicate", "out_of_order"):
            return
        if self.params["publish_rate_hz"] == 0:
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
        self.est_pub.publish(joint_state_msg(self.names, sec_to_stamp(est.stamp), est.position, est.velocity,
                                             effort))
        self.cov_pub.publish(matrix_msg(covariance_vector(est).reshape(len(self.names), -1), self._cov_labels))

    def _maybe_publish_belief(self) -> None:
        """At ``belief_rate_hz`` of sample time (the prior too, so consumers never wait for
        motion), or at every belief update when the rate is 0."""
        belief = self.core.belief()
        if belief is None:
            return
        last_updates, last_stamp = self._belief_published
        stamp = self.core.last_stamp
        if self._belief_period > 0:
            if 0.0 <= stamp - last_stamp < self._belief_period - 1e-9:
                return  # (a stamp before the last publication is a restarted stream: publish)
        elif belief.updates == last_updates:
            return
        self._belief_published = (belief.updates, stamp)
        self.belief_pub.publish(matrix_msg(np.stack([belief.values, belief.std]), self._belief_labels))

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
        status.values = [KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


NODE_CLASS = StateEstimatorNode  # for the in-process graph runner (simreal_ros.bringup.runner)


def main(args=None) -> int:
    return run_node(StateEstimatorNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
