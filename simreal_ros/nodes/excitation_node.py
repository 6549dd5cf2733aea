"""``excitation_controller`` node: the identification excitation, proposed through the shield.

A thin adapter around :class:`~simreal_ros.estimator.excitation.ExcitationRun`. It waits until
the shield sends (its commands on ``sent_topic``: the shield holds the arm where it measured it
when it started) and starts from the command the shield sends, so the first proposal is exactly
what the arm is already asked to hold (without a shield, ``sent_topic`` '': from the first joint
state on ``state_topic``). With ``recorder`` set (the calibrate graph: ``recorder``), it also
waits until the node of that name subscribes to its state, command and sent topics and to
``recorded_topics`` (the measured joint states, the shield's stamped sent commands), so the bag
holds the run from its first proposal: a recorder discovers a topic only once it has a publisher
and polls for it, and on a loaded machine it subscribed seconds after the excitation began. It approaches the excitation's centre smoothly, runs the excitation for ``duration`` s and then holds the centre, proposing joint position
targets (``std_msgs/Float64MultiArray``, robot joint order, ``layout.dim[0].label`` =
``position``) on ``command_topic`` every ``1/rate_hz`` s, like any other controller: the
calibrate graph points the shield's policy input at it, so every limit, the e-stop and the
watchdogs apply. When the excitation has ended it logs so and says ``finished`` on
``/diagnostics`` (status ``excitation_controller``, key ``phase``), and keeps holding.

A bad parameter stops the process at start with exit status 1, naming the key and range.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from simreal_ros.bag.status import not_received
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationRun, ExcitationRunConfig
from simreal_ros.nodes.common import JointOrder, array_msg, finite_positions, publish_status, run_node
from simreal_ros.nodes.params import Param, declare_and_read
from simreal_ros.robot import load_robot
from simreal_ros.settings import from_settings, settings_of

NODE_NAME = "excitation_controller"
COMMAND_TOPIC = "/simreal/excitation/command"

#: The node's parameters: its wiring, then every setting of the run and of the trajectory
#: (declared once in ExcitationRunConfig and ExcitationConfig). All are read once at start.
SPEC = [replace(s, read_only=True) for s in (
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf)"),
    Param("state_topic", "/simreal/state_estimate", "sensor_msgs/JointState input: where the arm is at the start"),
    Param("command_topic", COMMAND_TOPIC, "proposed joint targets (Float64MultiArray, labelled position)"),
    Param("sent_topic", "/forward_position_controller/commands",
          "commands the shield sends (robot order): the excitation starts from the one it holds "
          "('' = from the first joint state)"),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
    Param("recorder", "", "name of the recorder node to wait for before starting ('' = do not wait)"),
    Param("recorded_topics", ["/joint_states", "/simreal/shield/sent"],
          "with recorder set: topics (besides state, command and sent topic) it must subscribe first"),
    *settings_of(ExcitationRunConfig),
    *settings_of(ExcitationConfig),
)]


class ExcitationNode(Node):
    """Thin adapter around :class:`ExcitationRun`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        p = self.params = declare_and_read(self, SPEC)
        self.robot = load_robot(p["robot"])
        self.config = from_settings(ExcitationConfig, p, NODE_NAME)
        self.run_config = from_settings(ExcitationRunConfig, p, NODE_NAME)
        self.order = JointOrder(self.robot.joint_names)
        self.run: ExcitationRun | None = None
        self._t0 = 0.0
        self._q: np.ndarray | None = None
        self._announced = False
        self._sent: np.ndarray | None = None  # the shield's latest sent command
        self.counts = {"commands": 0, "bad_states": 0, "no_state": 0}
        self._unrecorded: list[str] = []  # topics the recorder has not subscribed yet (with recorder set)
        self.cmd_pub = self.create_publisher(Float64MultiArray, p["command_topic"], 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, p["state_topic"], self._on_state, qos_profile_sensor_data)
        if p["sent_topic"]:
            self.create_subscription(Float64MultiArray, p["sent_topic"], self._on_sent, 10)
        self._recorder_status: dict[str, str] = {}  # the recorder's own counts (its /diagnostics)
        if p["recorder"]:
            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_recorder_status, 50)
        sim_time = self.get_parameter("use_sim_time").value
        clock = None if sim_time else Clock(clock_type=ClockType.STEADY_TIME)
        self._run_clock = self.get_clock() if sim_time else clock  # (not _clock: rclpy's)
        self.create_timer(1.0 / self.run_config.rate_hz, self._on_timer, clock=clock)
        self.create_timer(p["diagnostics_period"], self._on_diagnostics, clock=clock)
        self.get_logger().info(
            f"{p['state_topic']} -> {p['command_topic']} at {self.run_config.rate_hz:g} Hz: excitation of "
            f"{self.config.duration:g} s (0: endless), amplitude {self.config.amplitude:g} rad, "
            f"{self.config.limit_fraction:g} of the limits, seed {self.run_config.seed}")

    def _now(self) -> float:
        return self._run_clock.now().nanoseconds * 1e-9

    def _on_state(self, msg: JointState) -> None:
        q = finite_positions(self, self.order, msg, self.counts, self.params["state_topic"])
        if q is not None:
            self._q = q

    def _on_sent(self, msg: Float64MultiArray) -> None:
        sent = np.asarray(msg.data, dtype=float)
        if sent.shape == (self.robot.n_joints,) and np.all(np.isfinite(sent)):
            self._sent = sent

    def _on_timer(self) -> None:
        if self.run is None:
            if self._q is None:
                self.counts["no_state"] += 1
                return
            start = self._q if not self.params["sent_topic"] else self._sent
            if start is None:  # nothing proposed until the shield holds the arm: no stale queued proposals
                return
            if self.params["recorder"]:  # and the recorder records from the first proposal
                self._unrecorded = self._not_recorded()
                if self._unrecorded:
                    return
            try:
                self.run = ExcitationRun(self.robot, start, self.config, self.run_config)
            except ValueError as exc:  # a start pose the excitation cannot centre around
                self.get_logger().error(f"cannot start the excitation: {exc}", throttle_duration_sec=5.0)
                return
            self._t0 = self._now()
            self.get_logger().info(f"starting from the {'sent command' if self.params['sent_topic'] else 'measured pose'}"
                                   f": {self.run.approach_time:.2f} s approach, then the excitation")
            t = 0.0  # the first proposal is the start pose itself, however late this process ran
        else:
            t = self._now() - self._t0
        q, _, _ = self.run(t)
        self.cmd_pub.publish(array_msg(q, label="position"))
        self.counts["commands"] += 1
        if self.run.finished(t) and not self._announced:
            self._announced = True
            self.get_logger().info(f"excitation finished after {t:.2f} s: holding the centre")
            self._on_diagnostics()

    def _on_recorder_status(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name != self.params["recorder"]:
                continue
            self._recorder_status = {kv.key: kv.value for kv in st.values}

    def _not_recorded(self) -> list[str]:
        """The topics (resolved, so remapped) the recorder node does not subscribe to yet."""
        p = self.params
        topics = [p["state_topic"], p["command_topic"], p["sent_topic"], *p["recorded_topics"]]
        out = []
        command = self.resolve_topic_name(p["command_topic"])
        for topic in dict.fromkeys(self.resolve_topic_name(t) for t in topics if t):
            if not any(i.node_name == p["recorder"] for i in self.get_subscriptions_info_by_topic(topic)):
                out.append(topic)
            elif topic != command and not_received(self._recorder_status, [topic]):
                # subscribed is not receiving: the publisher may match the recorder's subscription
                # later (the bag then began 0.24 s into the run's states, at load 3); its own count says
                out.append(f"{topic} (nothing received yet)")
        # The graph names a subscription once it is discovered, before this node's publisher has
        # matched it; a proposal published in between is lost to that subscriber (the bag began at
        # the second proposal in about one recording in four at load 5-8). Wait for the match too.
        if command not in out and self.cmd_pub.get_subscription_count() < self.count_subscribers(command):
            out.append(f"{command} (not matched yet)")
        return out

    def _on_diagnostics(self) -> None:
        status = DiagnosticStatus(name=NODE_NAME, hardware_id=self.robot.name, level=DiagnosticStatus.OK)
        values = {k: str(v) for k, v in self.counts.items()}
        if self.run is None:
            status.level = DiagnosticStatus.WARN
            status.message = ("waiting for the joint state" if self._q is None else
                              "waiting for the shield to forward" if self._sent is None and self.params["sent_topic"]
                              else f"waiting for {self.params['recorder']} to record {', '.join(self._unrecorded)}")
            values["phase"] = "waiting"
        else:
            t = self._now() - self._t0
            phase = self.run.phase(t)
            status.message = "finished: holding the centre" if phase == "finished" else phase
            values.update(phase=phase, elapsed_s=f"{t:.3f}", approach_s=f"{self.run.approach_time:.3f}",
                          end_s=f"{self.run.end_time:.3f}")
        values["duration_s"] = f"{self.config.duration:g}"
        publish_status(self, self.diag_pub, status, values)


def main(args=None) -> int:
    return run_node(ExcitationNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
