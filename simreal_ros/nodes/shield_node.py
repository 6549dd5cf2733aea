"""``safety_shield`` lifecycle node: the only path from command proposers to the arm.

A thin adapter around :class:`simreal_ros.shield.Shield` (see that module for what is
enforced). Lifecycle:

* configure: validates every parameter (an error names the key and the allowed range and
  the transition fails), loads the robot's limits, creates topics, services and timers;
* activate: starts forwarding (the core restarts from the measured state);
* deactivate: stops forwarding. Everything that commands the arm goes out on lifecycle
  publishers (command, sent state, interventions, shadow topics), which drop messages once
  deactivated; only ``/diagnostics`` is a plain publisher, so the inactive node still reports
  its status. Dropping the brake would leave the arm's controller holding a moving target (a
  step input), so the publishers are only deactivated once the sent targets stand still:

  - arm at rest: the transition succeeds at once;
  - still moving: the shield brakes (mode ``hold``) with the publishers enabled, and the
    ``deactivate`` request is answered with failure (the node stays ``active``: it still
    commands the arm). When the command is stationary the node triggers its own deactivate,
    which then succeeds (a manager sees it on ``~/transition_event``).

  Why not complete the transition later: rclpy 9.1.2 runs a transition callback synchronously
  on the executor thread and completes the transition with its return value
  (``LifecycleNodeMixin.__change_state``); there is no asynchronous transition. Waiting inside
  the callback would block that executor, so no joint state would arrive and no brake command
  could be published. ``shutdown`` cannot be deferred (the process ends): it tears down at
  once, wherever the arm is.
* ``autostart: true`` runs configure + activate from a one-shot timer at start (no lifecycle
  manager is needed); a failed configure then ends the process with exit status 1.

Topics: the parameters below (defaults and types in :mod:`simreal_ros.nodes`). Services
(``std_srvs/Trigger``): ``~/estop``, ``~/reset``, ``~/mode_active|shadow|blend|hold``; the
mode is also the validated parameter ``mode``. When it steps and what it publishes:
:class:`simreal_ros.shield.runtime.ShieldRuntime`.

Rollout gate (:class:`simreal_ros.rollout.stage.StageGate`, read-only parameters
``rollout_bundle``, ``rollout_target``, ``force_stage``, set by the launch graph): the mode at
configure and every later switch to shadow/blend/active is checked with the launch file's own
rule (:func:`~simreal_ros.rollout.stage.check_stage`) against the bundle's stage as its manifest
says at that moment; a refused switch leaves the mode as it was, answers the parameter or
service with the reason, logs it and reports it on ``/diagnostics`` (``stage_refusals``,
``last_stage_refusal``). The shield's own reverts (to the baseline or hold) are never gated.
"""

from __future__ import annotations

import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from simreal_ros.nodes.common import (
    DIAG_LEVEL,
    LATEST_COMMAND_QOS,
    LATEST_STATE_QOS,
    JointOrder,
    array_msg,
    destroy_entities,
    joint_state_msg,
    publish_status,
    run_node,
    stamp_to_sec,
)
from simreal_ros.nodes.params import Param, ParameterError, declare_and_read, descriptor, ros_default, validate_update
from simreal_ros.robot import RobotDescriptionError, load_robot
from simreal_ros.rollout.stage import GateRecord, StageGate
from simreal_ros.settings import from_settings, settings_of
from simreal_ros.shield import Shield
from simreal_ros.shield.config import NODE_NAME, SHIELD_SETTINGS, ShieldConfig
from simreal_ros.shield.runtime import ERROR, OK, WARN, ShieldRuntime, StepStamps

#: The node's parameters: every setting of the core (ShieldConfig, declared once) plus the wiring.
SPEC = [
    Param("robot", "panda", "robot description name (urdf/<robot>.urdf); all limits and gains come from it"),
    Param("policy_topic", "/simreal/policy/command", "policy proposals (Float64MultiArray, robot joint order, "
          "layout.dim[0].label = position|effort)"),
    Param("baseline_topic", "/simreal/baseline/command", "baseline proposals (Float64MultiArray, labelled)"),
    Param("state_topic", "/simreal/state_estimate", "sensor_msgs/JointState (estimate, or /joint_states)"),
    Param("revert_topic", "/simreal/shield/revert", "std_msgs/String revert requests from monitors"),
    Param("command_topic", "/forward_position_controller/commands", "sent command (Float64MultiArray)"),
    Param("sent_state_topic", "/simreal/shield/sent", "sent command as JointState stamped with the shield's step "
          "time on the ROS clock (the driver's; exact times for check_limits and calibration); empty: off"),
    Param("interventions_topic", "/simreal/shield/interventions", "DiagnosticArray, one status per intervention"),
    Param("shadow_topic", "/simreal/shield/shadow_command", "shadow mode: what the policy would have sent"),
    Param("shadow_interventions_topic", "/simreal/shield/shadow_interventions", "shadow mode: its interventions"),
    *SHIELD_SETTINGS,
    *settings_of(StageGate),
    Param("autostart", False, "configure + activate at start (no lifecycle manager needed)"),
    Param("diagnostics_period", 1.0, "s between /diagnostics messages", low=0.05, high=60.0),
]
MODE_SERVICES = ("active", "shadow", "blend", "hold")


class ShieldNode(LifecycleNode):
    """Lifecycle adapter around :class:`Shield`; see the module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for p in SPEC:
            # declared without the numeric range so that a bad override does not abort the
            # process here: configure validates and fails naming the key (lifecycle contract)
            self.declare_parameter(p.name, ros_default(p), descriptor(p, ranges=False))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.shield: Shield | None = None
        self.run: ShieldRuntime | None = None
        self.exit_code: int | None = None
        self._entities: list = []
        self._lifecycle_pubs: list = []
        self._deactivate_deferred = False
        self._syncing = False
        self._warned_no_velocity = False
        sim_time = self.get_parameter("use_sim_time").value
        # the clock the shield steps on (not ``self._clock``: that is rclpy's ROS clock of the node,
        # which get_clock() returns and the published stamps use)
        self._step_clock = self.get_clock() if sim_time else Clock(clock_type=ClockType.STEADY_TIME)
        # sent-command stamps on the ROS clock; with sim time the shield steps on it already
        self._stamps = None if sim_time else StepStamps(lambda: self._step_clock.now().nanoseconds,
                                                        lambda: self.get_clock().now().nanoseconds)
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1
            return
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1

    def _config(self, p: dict) -> ShieldConfig:
        return from_settings(ShieldConfig, {k: tuple(v) if isinstance(v, list) else v for k, v in p.items()},
                             "parameters")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            p = declare_and_read(self, SPEC)
            robot = load_robot(p["robot"])
            gate = from_settings(StageGate, p, "parameters")
            stage_warning = gate.check(p["mode"])  # StageError: the launch file would have refused it too
            self.shield = Shield(robot, self._config(p))
            self.run = ShieldRuntime(self.shield)
        except (ParameterError, RobotDescriptionError, ValueError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.stages = GateRecord(gate, stage_warning)
        if stage_warning:
            self.get_logger().warning(f"mode '{p['mode']}': {stage_warning}")
        self.params, self.robot = p, robot
        self.order = JointOrder(robot.joint_names)
        e, lp = self._entities, self._lifecycle_pubs
        # enabled only while active (see the module docstring); /diagnostics always
        self.cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, p["command_topic"], 10)
        self.iv_pub = self.create_lifecycle_publisher(DiagnosticArray, p["interventions_topic"], 50)
        self.shadow_pub = self.create_lifecycle_publisher(Float64MultiArray, p["shadow_topic"], 10)
        self.shadow_iv_pub = self.create_lifecycle_publisher(DiagnosticArray, p["shadow_interventions_topic"], 50)
        lp += [self.cmd_pub, self.iv_pub, self.shadow_pub, self.shadow_iv_pub]
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        e.append(self.diag_pub)
        self.sent_pub = None
        if p["sent_state_topic"]:
            self.sent_pub = self.create_lifecycle_publisher(JointState, p["sent_state_topic"], 50)
            lp.append(self.sent_pub)
        e.append(self.create_subscription(JointState, p["state_topic"], self._on_state, LATEST_STATE_QOS))
        e.append(self.create_subscription(Float64MultiArray, p["policy_topic"],
                                          lambda m: self._on_command("policy", m), LATEST_COMMAND_QOS))
        e.append(self.create_subscription(Float64MultiArray, p["baseline_topic"],
                                          lambda m: self._on_command("baseline", m), LATEST_COMMAND_QOS))
        e.append(self.create_subscription(String, p["revert_topic"], self._on_revert, 10))
        e.append(self.create_service(Trigger, "~/estop", self._srv_estop))
        e.append(self.create_service(Trigger, "~/reset", self._srv_reset))
        for m in MODE_SERVICES:
            e.append(self.create_service(Trigger, f"~/mode_{m}", lambda req, res, m=m: self._srv_mode(m, res)))
        self._watchdog = self.create_timer(p["control_period"], self._on_timer, clock=self._step_clock)
        e.append(self._watchdog)
        e.append(self.create_timer(p["diagnostics_period"], self._publish_diagnostics, clock=self._step_clock))
        self.get_logger().info(
            f"configured: {p['command_mode']} mode, {p['mode']}; {p['policy_topic']} + {p['baseline_topic']} + "
            f"{p['state_topic']} -> {p['command_topic']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ok, why = self.run.activate(self.params["mode"])
        if not ok:
            self.get_logger().warning(f"mode '{self.params['mode']}' refused on activate: {why}")
        self.get_logger().info(f"active: forwarding ({self.shield.mode})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.params["mode"] = self.get_parameter("mode").value
        if self.run is not None and not self.run.deactivate():
            # still moving: brake with the publishers enabled; _publish deactivates once still
            self._deactivate_deferred = True
            self.get_logger().warning("deactivate deferred: braking (still active); the node deactivates itself "
                                      "once the command stands still")
            return TransitionCallbackReturn.FAILURE
        self._deactivate_deferred = False
        self.get_logger().info("inactive: holding")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        for pub in self._lifecycle_pubs:
            self.destroy_lifecycle_publisher(pub)
        self._lifecycle_pubs = []
        self._deactivate_deferred = False
        destroy_entities(self, self._entities)
        self._entities = []
        self.shield = self.run = None

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self._step_clock.now().nanoseconds * 1e-9

    def _on_state(self, msg: JointState) -> None:
        now = self._now()
        try:
            q, dq, _ = self.order.arrays(msg)
        except ValueError as exc:
            self.run.bad_states += 1
            self.get_logger().error(f"ignoring state on {self.params['state_topic']}: {exc}",
                                    throttle_duration_sec=2.0)
            return
        if dq is None and not self._warned_no_velocity:
            self.get_logger().warning("joint state without velocities: the torque check assumes 0")
            self._warned_no_velocity = True
        why = self.run.on_state(q, dq, stamp_to_sec(msg.header.stamp) or now, now)
        if why:
            self.get_logger().warning(f"rejected joint state: {why}", throttle_duration_sec=2.0)

    def _on_command(self, source: str, msg: Float64MultiArray) -> None:
        now = self._now()
        kind = msg.layout.dim[0].label if msg.layout.dim else ""
        ok, cycle = self.run.on_command(source, msg.data, kind, now)
        if not ok:
            why = self.run.rejection(kind, len(msg.data))
            self.get_logger().error(f"rejected {source} command ({why}): holding", throttle_duration_sec=1.0)
        if cycle is not None:  # stepped on arrival: the watchdog fires only when no proposal follows in time
            self._watchdog.reset()
        self._publish(cycle)

    def _on_revert(self, msg: String) -> None:
        self.shield.request_revert(msg.data)
        self.get_logger().error(f"revert requested: {msg.data}")
        self._sync_mode_parameter()

    def _on_timer(self) -> None:
        if self.run is not None:
            self._publish(self.run.on_timer(self._now()))

    # ------------------------------------------------------------------ output
    def _publish(self, cycle) -> None:
        if cycle is None:
            return
        logger = self.get_logger()
        for level, text in cycle.events:  # status changes only: rare, not throttled
            # (one call site per severity: rclpy refuses a call site that changes severity)
            if level == ERROR:
                logger.error(text)
            elif level == WARN:
                logger.warning(text)
            else:
                logger.info(text)
        if cycle.stopped and self._deactivate_deferred:
            self._deactivate_deferred = False
            if self.trigger_deactivate() != TransitionCallbackReturn.SUCCESS:
                logger.error("deferred deactivate failed")
        if not cycle.publish:
            return
        out = cycle.output
        self.cmd_pub.publish(array_msg(out.command))
        if self.sent_pub is not None:  # the same command, stamped with the time the shield used
            effort = self.shield.config.command_mode == "effort"
            self.sent_pub.publish(joint_state_msg(self.order.names, self._ros_stamp(out.time),
                                                  position=None if effort else out.command,
                                                  effort=out.command if effort else None))
        stamp = self.get_clock().now().to_msg()
        if out.interventions:
            self.iv_pub.publish(self._interventions_msg(out.interventions, stamp, out.source))
        if out.shadow_command is not None:
            self.shadow_pub.publish(array_msg(out.shadow_command))
            if out.shadow_interventions:
                self.shadow_iv_pub.publish(self._interventions_msg(out.shadow_interventions, stamp, "policy"))
        if cycle.status_changed:
            self._sync_mode_parameter()
            self._publish_diagnostics()

    def _ros_stamp(self, t: float):
        """The stamp of shield time ``t`` on the ROS clock (:class:`StepStamps`)."""
        ns = int(round(t * 1e9)) if self._stamps is None else self._stamps(t)
        return Time(nanoseconds=ns).to_msg()

    def _interventions_msg(self, interventions, stamp, source: str) -> DiagnosticArray:
        msg = DiagnosticArray()
        msg.header.stamp = stamp
        for iv in interventions:
            msg.status.append(DiagnosticStatus(
                level=DiagnosticStatus.WARN, name=f"{NODE_NAME}: {iv.joint}", message=iv.kind,
                hardware_id=self.robot.name,
                values=[KeyValue(key="joint", value=iv.joint), KeyValue(key="kind", value=iv.kind),
                        KeyValue(key="requested", value=repr(iv.requested)),
                        KeyValue(key="applied", value=repr(iv.applied)), KeyValue(key="source", value=source)]))
        return msg

    def _publish_diagnostics(self) -> None:
        self._publish_status()

    def _publish_status(self, refusal: str = "") -> None:
        """/diagnostics now; ``refusal``: a refused mode switch, reported as a warning (a timer
        callback with a parameter gets rclpy's TimerInfo, hence two methods)."""
        if self.run is None:
            return
        level, text, values = self.run.status(self._now())
        values.update(self.stages.values())
        if refusal and level == OK:
            level, text = WARN, refusal
        publish_status(self, self.diag_pub, DiagnosticStatus(level=DIAG_LEVEL[level], name=NODE_NAME, message=text,
                                                             hardware_id=self.robot.name), values)

    # ------------------------------------------------------------------ services, parameters
    def _srv_estop(self, req, res):
        self.shield.estop("~/estop service")
        self.get_logger().error("E-STOP (latched until ~/reset)")
        res.success, res.message = True, "e-stop latched: braking, then holding; ~/reset to clear"
        return res

    def _srv_reset(self, req, res):
        res.success, res.message = self.shield.reset(self._now())
        self._sync_mode_parameter()
        self.get_logger().info(f"reset: {res.message}")
        return res

    def _srv_mode(self, mode: str, res):
        result = self.set_parameters([Parameter("mode", value=mode)])[0]
        res.success, res.message = result.successful, result.reason or f"mode {mode}"
        return res

    def _sync_mode_parameter(self) -> None:
        sh = self.shield
        if sh is not None and self.get_parameter("mode").value != sh.mode and not self.run.stopping:
            self._syncing = True
            try:
                self.set_parameters([Parameter("mode", value=sh.mode)])
            finally:
                self._syncing = False

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate every update; ``mode`` applies at once while active (it may be refused,
        e.g. while a revert is latched), otherwise on the next activate. Other parameters
        take effect at the next configure."""
        ok, why = validate_update(SPEC, params)
        if not ok:
            return SetParametersResult(successful=False, reason=why)
        for prm in params:
            if prm.name != "mode" or self.shield is None or self._syncing:
                continue
            refused = self._gate(prm.value)
            if refused:
                return SetParametersResult(successful=False, reason=refused)
            if not self.run.active:
                self.params["mode"] = prm.value
                continue
            ok, why = self.shield.set_mode(prm.value)
            if not ok:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _gate(self, mode: str) -> str:
        """'' when the rollout gate lets the shield switch to ``mode``, else the refusal (logged,
        counted and reported on /diagnostics at once)."""
        refused, warning = self.stages.ask(mode)
        if refused:
            self.get_logger().error(refused)
            self._publish_status(refused)
        elif warning:
            self.get_logger().warning(f"mode '{mode}': {warning}")
        return refused


def main(args=None) -> int:
    return run_node(ShieldNode, args, NODE_NAME)


if __name__ == "__main__":
    sys.exit(main())
