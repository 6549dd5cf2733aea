"""The safety_shield node over DDS with real processes: watchdog on a killed proposer, stale
state fault, e-stop/reset services, shadow mode, lifecycle and parameter validation.

Run inside a loopback-only network namespace (see .ci/run), e.g.::

    unshare -n sh -c 'ip link set lo up && exec python -m pytest test/test_shield_node.py'
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from simreal_ros.bag.check import stamped_commands
from simreal_ros.robot import load_robot
from simreal_ros.shield import check_limits

pytestmark = pytest.mark.ros

ROBOT = load_robot()
NAMES = list(ROBOT.joint_names)
READY = ROBOT.ready_pose.copy()
PERIOD = 0.05
TIMEOUT = 0.1

#: a proposer process: publishes a fixed target at 20 Hz on the given topic until killed
PUBLISHER = """
import sys, rclpy, rclpy.executors
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
rclpy.init()
node = rclpy.create_node("fake_" + sys.argv[2].strip("/").replace("/", "_"))
pub = node.create_publisher(Float64MultiArray, sys.argv[2], 10)
target = [float(x) for x in sys.argv[1].split(",")]
dim = [MultiArrayDimension(label=sys.argv[3], size=len(target), stride=len(target))] if sys.argv[3] else []
msg = Float64MultiArray(data=target)
msg.layout.dim = dim
node.create_timer(0.05, lambda: pub.publish(msg))
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
node.destroy_node()
rclpy.try_shutdown()
"""


def start_shield(processes, *params: str, name: str = "shield"):
    args = ["-m", "simreal_ros.nodes.shield_node", "--ros-args", "--params-file", "config/shield.yaml",
            "-p", f"control_period:={PERIOD}", "-p", f"command_timeout:={TIMEOUT}", "-p", "revert_fraction:=1.0"]
    for p in params:
        args += ["-p", p]
    return processes.start(*args, name=name)


def start_proposer(processes, target, topic="/simreal/policy/command", name="policy", kind="position"):
    return processes.start("-c", PUBLISHER, ",".join(repr(float(x)) for x in target), topic, kind, name=name)


def shm_mapped(pid: int | str = "[0-9]*", exclude: int | None = None) -> set[str]:
    """Fast DDS shared-memory segments mapped by process ``pid`` (default: any process)."""
    names = set()
    for maps in Path("/proc").glob(f"{pid}/maps"):
        if exclude is not None and maps.parent.name == str(exclude):
            continue
        try:
            names |= {line.rsplit("/", 1)[-1].strip() for line in maps.read_text().splitlines()
                      if "/dev/shm/fastdds_" in line}
        except OSError:
            continue
    return names


def remove_stale_segments(candidates: set[str]) -> None:
    """A SIGKILLed process leaves its Fast DDS segments behind: remove those of
    ``candidates`` (what it had mapped) that no other live process maps any more (this
    test process maps its dead peer's segment too; unlinking only drops the name)."""
    for name in candidates - shm_mapped(exclude=os.getpid()):
        for suffix in ("", "_el"):
            Path("/dev/shm", name + suffix).unlink(missing_ok=True)


class Arm:
    """The probe plays a perfectly tracking arm: it publishes the last sent command as the
    joint state at 100 Hz and records everything the shield publishes."""

    def __init__(self, node, state_topic="/simreal/state_estimate") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.node = node
        self.q = READY.copy()
        self.sent: list[np.ndarray] = []
        self.shadow: list[np.ndarray] = []
        self.diag: list[dict] = []
        self.publish_state = True
        self._js = JointState
        self.state_pub = node.create_publisher(JointState, state_topic, 10)
        node.create_subscription(Float64MultiArray, "/forward_position_controller/commands", self._on_sent, 50)
        node.create_subscription(Float64MultiArray, "/simreal/shield/shadow_command",
                                 lambda m: self.shadow.append(np.array(m.data)), 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self.stamped: list = []  # the sent commands with the shield's times (JointState)
        node.create_subscription(JointState, "/simreal/shield/sent", self.stamped.append, 50)
        node.create_timer(0.01, self._tick)

    def _on_sent(self, msg) -> None:
        self.sent.append(np.array(msg.data))
        self.q = self.sent[-1]

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name == "safety_shield":
                self.diag.append({**{kv.key: kv.value for kv in st.values}, "message": st.message})

    def _tick(self) -> None:
        if self.publish_state:
            msg = self._js()
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.name = NAMES
            msg.position = self.q.tolist()
            msg.velocity = [0.0] * len(NAMES)
            self.state_pub.publish(msg)

    def last_diag(self) -> dict:
        return self.diag[-1] if self.diag else {}

    def settled(self, n: int = 5) -> bool:
        return len(self.sent) > n and all(np.array_equal(self.sent[-1], s) for s in self.sent[-n:])


def call_trigger(node, service: str, timeout: float = 10.0):
    from std_srvs.srv import Trigger

    cli = node.create_client(Trigger, service)
    assert node.spin_until(lambda: cli.service_is_ready(), timeout), f"{service} not available"
    fut = cli.call_async(Trigger.Request())
    assert node.spin_until(fut.done, timeout), f"{service} did not answer"
    return fut.result()


def target_near_ready():
    t = READY.copy()
    t[0] += 0.2
    return t


def target_far():
    t = READY.copy()
    t[0] += 1.5
    t[1] += 0.5
    return t


def test_killed_proposer_stops_and_holds_within_timeout_plus_one_cycle(processes, ros_node):
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true")
    pub = start_proposer(processes, target_far())
    assert ros_node.spin_until(lambda: len(arm.sent) > 2 and arm.last_diag().get("source") == "policy", 30)
    # kill it while the arm moves fast toward the far target
    assert ros_node.spin_until(lambda: len(arm.sent) > 2 and np.abs(arm.sent[-1] - arm.sent[-2]).max() > 0.02, 20)
    segments = {n for n in shm_mapped(pub.pid) if "port" not in n}
    k0 = len(arm.diag)
    pub.send_signal(signal.SIGKILL)
    pub.wait()
    assert ros_node.spin_until(lambda: "no fresh policy" in arm.last_diag().get("reason", ""), 10)
    hold = next(d for d in arm.diag[k0:] if "no fresh policy" in d.get("reason", ""))
    # the shield's own clock: age of the last policy command when it began the stop
    # (timer jitter on a loaded machine allowed: half a cycle)
    assert float(hold["command_age"]) <= TIMEOUT + 1.5 * PERIOD, hold
    assert ros_node.spin_until(arm.settled, 10)
    # what went to the arm (speeding up, cruising, braking, holding) is within every limit
    assert len(arm.stamped) > 5
    times, sent = stamped_commands(arm.stamped, ROBOT)
    on_topic = {tuple(x) for x in arm.sent}
    assert all(tuple(x) in on_topic for x in sent[:-2])  # the same commands as on the command topic
    assert check_limits(ROBOT, times, sent, position_margin=0.01) == []
    processes.stop_all()
    remove_stale_segments(segments)


def test_stale_state_latches_fault_until_reset(processes, ros_node):
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true")
    start_proposer(processes, READY)
    assert ros_node.spin_until(lambda: arm.last_diag().get("source") == "policy", 30)
    arm.publish_state = False
    assert ros_node.spin_until(lambda: "stale" in arm.last_diag().get("fault", ""), 10)
    arm.publish_state = True
    n_diag = len(arm.diag)  # two more status reports while fresh states flow in (counts, not a wait)
    assert ros_node.spin_until(lambda: len(arm.diag) >= n_diag + 2, 10)
    assert "stale" in arm.last_diag()["fault"]  # fresh state alone does not clear it
    res = call_trigger(ros_node, "/safety_shield/reset")
    assert res.success, res.message
    assert ros_node.spin_until(lambda: arm.last_diag().get("source") == "policy"
                               and arm.last_diag().get("fault") == "", 10)


def test_estop_and_reset_through_services(processes, ros_node):
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true")
    start_proposer(processes, target_near_ready())
    assert ros_node.spin_until(lambda: arm.last_diag().get("source") == "policy", 30)
    res = call_trigger(ros_node, "/safety_shield/estop")
    assert res.success
    assert ros_node.spin_until(lambda: arm.last_diag().get("estop") == "true", 10)
    assert ros_node.spin_until(arm.settled, 10)
    n = len(arm.sent)
    assert ros_node.spin_until(lambda: len(arm.sent) >= n + 20, 10)  # it keeps sending: the hold
    assert all(np.array_equal(s, arm.sent[n - 1]) for s in arm.sent[n:])  # holding, latched
    res = call_trigger(ros_node, "/safety_shield/reset")
    assert res.success, res.message
    assert ros_node.spin_until(lambda: arm.last_diag().get("estop") == "false"
                               and arm.last_diag().get("source") == "policy", 10)


def test_shadow_mode_never_forwards_the_policy(processes, ros_node):
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true", "mode:=shadow")
    far = READY.copy()
    far[0] += 1.0
    start_proposer(processes, far, name="policy")
    start_proposer(processes, READY, topic="/simreal/baseline/command", name="baseline")
    assert ros_node.spin_until(lambda: len(arm.shadow) > 20, 30)
    assert arm.sent
    assert max(abs(s[0] - READY[0]) for s in arm.sent) < 1e-9  # only the baseline (at READY) was sent
    assert max(abs(s[0] - READY[0]) for s in arm.shadow) > 0.01  # the policy would have moved
    # the mode parameter is validated: an unknown mode is refused, naming the key
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    cli = ros_node.create_client(SetParameters, "/safety_shield/set_parameters")
    assert ros_node.spin_until(cli.service_is_ready, 10)
    bad = Parameter(name="mode", value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="dance"))
    fut = cli.call_async(SetParameters.Request(parameters=[bad]))
    assert ros_node.spin_until(fut.done, 10)
    result = fut.result().results[0]
    assert not result.successful and "'mode'" in result.reason and "allowed" in result.reason
    # switching to active through the service is bumpless and then the policy drives
    assert call_trigger(ros_node, "/safety_shield/mode_active").success
    assert ros_node.spin_until(lambda: arm.last_diag().get("mode") == "active", 10)


def test_lifecycle_without_autostart_publishes_only_when_active(processes, ros_node):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    arm = Arm(ros_node)
    shield = start_shield(processes)
    start_proposer(processes, READY)
    cli = ros_node.create_client(ChangeState, "/safety_shield/change_state")
    assert ros_node.spin_until(cli.service_is_ready, 30)
    # the proposer is up and the shield's node exists (its service answers), yet unconfigured it
    # has no command publisher at all: nothing can be forwarded
    assert ros_node.spin_until(lambda: ros_node.count_publishers("/simreal/policy/command") == 1, 30)
    assert ros_node.count_publishers("/forward_position_controller/commands") == 0
    assert arm.sent == []
    for tid in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        fut = cli.call_async(ChangeState.Request(transition=Transition(id=tid)))
        assert ros_node.spin_until(fut.done, 10) and fut.result().success
    assert ros_node.spin_until(lambda: len(arm.sent) > 5, 10)
    fut = cli.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
    assert ros_node.spin_until(fut.done, 10) and fut.result().success
    assert ros_node.spin_until(arm.settled, 10)
    n, n_diag = len(arm.sent), len(arm.diag)
    # the inactive node still reports its status: over two reports, not one command more
    assert ros_node.spin_until(lambda: len(arm.diag) >= n_diag + 2, 10), processes.output(shield)[-2000:]
    assert len(arm.sent) == n and arm.last_diag().get("lifecycle") == "inactive"


def test_deactivate_while_moving_brakes_on_the_lifecycle_publishers_then_deactivates_itself(processes, ros_node):
    """Gap 3 of issue 9: lifecycle publishers drop messages once deactivated, so a deactivate
    while the arm moves is answered 'not yet' (the node stays active and brakes), and the node
    deactivates itself once its command stands still. (The old node went inactive at once
    and braked on plain publishers.)"""
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    arm = Arm(ros_node)
    start_shield(processes)
    start_proposer(processes, target_far())
    change = ros_node.create_client(ChangeState, "/safety_shield/change_state")
    get = ros_node.create_client(GetState, "/safety_shield/get_state")
    assert ros_node.spin_until(change.service_is_ready, 30) and ros_node.spin_until(get.service_is_ready, 30)

    def transition(tid: int) -> bool:
        fut = change.call_async(ChangeState.Request(transition=Transition(id=tid)))
        assert ros_node.spin_until(fut.done, 10)
        return fut.result().success

    def state() -> int:
        fut = get.call_async(GetState.Request())
        assert ros_node.spin_until(fut.done, 10)
        return fut.result().current_state.id

    assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
    # deactivate while the command moves fast toward the far target
    assert ros_node.spin_until(lambda: len(arm.sent) > 2 and np.abs(arm.sent[-1] - arm.sent[-2]).max() > 0.06, 20)
    n = len(arm.sent)
    assert not transition(Transition.TRANSITION_DEACTIVATE)  # deferred: braking, still active
    assert ros_node.spin_until(lambda: state() == State.PRIMARY_STATE_INACTIVE, 10)
    assert len(arm.sent) > n, "it braked on its (still enabled) publishers"
    times, sent = stamped_commands(arm.stamped, ROBOT)
    assert check_limits(ROBOT, times, sent, position_margin=0.01) == []
    m, n_diag = len(arm.sent), len(arm.diag)
    assert ros_node.spin_until(lambda: len(arm.diag) >= n_diag + 2, 10)
    assert len(arm.sent) == m and arm.last_diag().get("lifecycle") == "inactive"
    # at rest, a deactivate succeeds at once (and a reactivation forwards again)
    assert transition(Transition.TRANSITION_ACTIVATE)
    assert ros_node.spin_until(lambda: len(arm.sent) > m + 2, 10)


def test_a_torque_command_never_drives_a_position_shield(processes, ros_node):
    """Defect 6: the node ignored the command label, so N m values became radian targets."""
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true")
    torques = np.full(ROBOT.n_joints, 0.5)
    start_proposer(processes, torques, kind="effort")
    start_proposer(processes, READY, topic="/simreal/baseline/command", name="unlabelled", kind="")
    assert ros_node.spin_until(lambda: int(arm.last_diag().get("rejected_policy_kind", "0")) > 5, 30)
    assert ros_node.spin_until(lambda: int(arm.last_diag().get("rejected_baseline_kind", "0")) > 5, 30)
    assert arm.sent, "the shield holds the arm (it publishes its hold)"
    assert all(np.allclose(c, arm.sent[0]) for c in arm.sent), "a refused command moved the arm"
    assert arm.last_diag().get("source") == "hold"


def test_bad_parameter_fails_configure_naming_the_key(processes):
    proc = start_shield(processes, "autostart:=true", "position_margin:=-0.5", name="bad")
    assert proc.wait(30) == 1
    out = processes.output(proc)
    assert "position_margin" in out and "allowed" in out, out


def test_sent_commands_are_stamped_on_the_drivers_ros_clock(processes, ros_node):
    """The stamped sent commands and the driver's joint states must share one clock (calibration
    replays the sent commands against the measured states); the shield steps on the steady
    clock, whose epoch is the boot, and stamped that: 1.7e9 s away from ROS time."""
    import time

    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true")
    start_proposer(processes, target_near_ready())
    assert ros_node.spin_until(lambda: len(arm.stamped) > 20, 30)
    t_sent, _ = stamped_commands(arm.stamped[-20:], ROBOT)
    now = time.time()  # ROS time without use_sim_time is the system clock, the arm probe's stamps
    # each was sent at most a few DDS deliveries before this probe received it (a loaded machine)
    assert np.all(t_sent <= now + 0.01) and np.all(t_sent > now - 2.0), (t_sent - now).tolist()
    assert np.all(np.diff(t_sent) > 0)


def _set_parameter(node, name: str, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    cli = node.create_client(SetParameters, "/safety_shield/set_parameters")
    assert node.spin_until(cli.service_is_ready, 10)
    pv = (ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value) if isinstance(value, bool) else
          ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
    fut = cli.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=pv)]))
    assert node.spin_until(fut.done, 10)
    return fut.result().results[0]


def test_a_running_shield_refuses_a_switch_beyond_its_bundles_rollout_stage(processes, ros_node, tmp_path):
    """The launch graph refuses a shield mode the bundle's stage does not allow; the running
    shield applies the same rule (rollout.stage.check_stage) to every later switch, by service
    or parameter, reports the refusal on /diagnostics and keeps its mode; a promotion written
    while it runs counts at the next switch; the gate's parameters cannot be changed at run time."""
    from simreal_ros.policy.onnx_linear import write_linear_bundle
    from simreal_ros.rollout.stage import write_rollout

    b = write_linear_bundle(tmp_path / "b", ROBOT, seed=0)
    write_rollout(b, "shadow", {"from": "none", "to": "shadow", "decision": "promoted"})  # under rollout: gated in sim
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true", "mode:=shadow", f"rollout_bundle:={b}", "rollout_target:=sim")
    far = READY.copy()
    far[0] += 1.0
    start_proposer(processes, far, name="policy")
    start_proposer(processes, READY, topic="/simreal/baseline/command", name="baseline")
    assert ros_node.spin_until(lambda: arm.last_diag().get("mode") == "shadow" and len(arm.shadow) > 5, 30)
    res = call_trigger(ros_node, "/safety_shield/mode_active")
    assert not res.success
    assert "stage 'shadow'" in res.message and "needs stage 'active'" in res.message and str(b) in res.message
    assert "simreal promote" in res.message, res.message
    result = _set_parameter(ros_node, "mode", "blend")
    assert not result.successful and "needs stage 'blend'" in result.reason, result.reason
    assert ros_node.spin_until(lambda: arm.last_diag().get("stage_refusals") == "2", 10)
    assert arm.last_diag()["rollout_bundle"] == str(b)
    assert arm.last_diag()["last_stage_refusal"].startswith("mode 'blend' refused: policy bundle 'linear")
    # nothing of the policy was sent: the baseline (at READY) still drives, in shadow mode
    n = len(arm.sent)
    assert ros_node.spin_until(lambda: len(arm.sent) > n + 10, 10)
    assert max(abs(s[0] - READY[0]) for s in arm.sent) < 1e-9 and arm.last_diag()["mode"] == "shadow"
    # the gate is read-only: it cannot be forced or pointed elsewhere at run time
    assert not _set_parameter(ros_node, "force_stage", True).successful
    assert not _set_parameter(ros_node, "rollout_bundle", "").successful
    # promoted while running: the next switch is allowed
    write_rollout(b, "blend", {"from": "shadow", "to": "blend", "decision": "promoted"})
    res = call_trigger(ros_node, "/safety_shield/mode_blend")
    assert res.success, res.message
    assert ros_node.spin_until(lambda: arm.last_diag().get("mode") == "blend", 10)
    assert not call_trigger(ros_node, "/safety_shield/mode_active").success
    assert call_trigger(ros_node, "/safety_shield/mode_hold").success  # hold needs no stage


def test_the_rollout_gate_refuses_at_configure_and_yields_to_force_stage(processes, ros_node, tmp_path):
    from simreal_ros.policy.onnx_linear import write_linear_bundle

    b = write_linear_bundle(tmp_path / "b", ROBOT, seed=0)  # no rollout record: stage none
    proc = start_shield(processes, "autostart:=true", "mode:=active", f"rollout_bundle:={b}", name="refused")
    assert proc.wait(30) == 1  # rollout_target defaults to real: enforced for every bundle
    out = processes.output(proc)
    assert "configure failed" in out and "stage 'none'" in out and "needs stage 'active'" in out, out
    arm = Arm(ros_node)
    start_shield(processes, "autostart:=true", "mode:=hold", f"rollout_bundle:={b}", "force_stage:=true")
    start_proposer(processes, target_near_ready())
    assert ros_node.spin_until(lambda: arm.last_diag().get("mode") == "hold", 30)
    res = call_trigger(ros_node, "/safety_shield/mode_active")
    assert res.success, res.message
    assert ros_node.spin_until(lambda: arm.last_diag().get("source") == "policy", 10)
    assert "forced" in arm.last_diag()["stage_warning"] and arm.last_diag()["stage_refusals"] == "0"
