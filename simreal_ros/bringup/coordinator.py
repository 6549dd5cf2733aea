"""The run coordinator of ``simreal sim``: sequences goals, watches progress, collects figures.

A plain rclpy node (not part of the launch graph): it asks the sim bridge for a goal, waits
until the flange (reach) or the puck (push; the bridge's true puck pose) is within the
success radius and slow, or a timeout passes, then asks for the next one. It counts interventions, reads the policy
executor's latency from ``/diagnostics`` and keeps the numbers for the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from simreal_ros.nodes.common import JointOrder
from simreal_ros.robot import load_robot


@dataclass
class GoalResult:
    goal: list[float]
    reached: bool
    seconds: float
    final_distance_m: float


@dataclass
class RunFigures:
    goals: list[GoalResult] = field(default_factory=list)
    interventions: int = 0
    sent_commands: int = 0
    policy_commands: int = 0
    policy_latency_p99_ms: float | None = None
    diagnostics_seen: dict[str, str] = field(default_factory=dict)  # node -> last level name
    #: the last /diagnostics key/values of each node (by the name before ':'), and a copy taken
    #: when the graph was up (:meth:`mark_started`): the run's figures are differences
    latest: dict[str, dict[str, str]] = field(default_factory=dict)
    at_start: dict[str, dict[str, str]] = field(default_factory=dict)
    _baseline_pending: bool = False

    def observe(self, node: str, values: dict[str, str]) -> None:
        """A /diagnostics report of ``node`` (the name before ':'); takes the pending baseline."""
        self.latest[node] = values
        self._take_baseline()

    def mark_started(self) -> None:
        """The graph is up: the run's counters (skipped cycles, holds) count from the first policy
        report taken while it proposes (its ``commands`` counter above 0; now, if the latest is one).
        A report from before the policy's first state holds none of the start-up's ``no_state``
        cycles that follow it: taken as the baseline, they counted as the run's skipped cycles
        (3 of 98 in an idle run, all ``no_state``)."""
        self._baseline_pending = True
        self._take_baseline()

    def _take_baseline(self) -> None:
        if self._baseline_pending and (self._count("policy_executor", "commands") or 0) > 0:
            self.at_start = {k: dict(v) for k, v in self.latest.items()}
            self._baseline_pending = False

    def _count(self, node: str, key: str, which: dict | None = None) -> int | None:
        values = (self.latest if which is None else which).get(node)
        if values is None:
            return None
        try:
            return int(float(values.get(key, 0)))  # a counter the node has not incremented yet is absent
        except ValueError:
            return None

    def since_start(self, node: str, key: str) -> int | None:
        """Growth of a counter in ``node``'s diagnostics since :meth:`Coordinator.mark_started`."""
        end, start = self._count(node, key), self._count(node, key, self.at_start)
        return None if end is None else end - (start or 0)

    def timing(self) -> dict[str, float | int | None]:
        """The policy's state age p99 (ms, its last stats window), the share of its cycles skipped
        (and their reasons, the executor's ``skipped_<reason>`` counters) and the shield's holds for
        lack of a fresh command, all counted after start-up."""
        cycles, skipped = self.since_start("policy_executor", "cycles"), self.since_start("policy_executor", "skipped")
        latest = self.latest.get("policy_executor", {})
        age = latest.get("state_age_p99_ms")
        reasons = {k[len("skipped_"):]: n for k in latest if k.startswith("skipped_")
                   if (n := self.since_start("policy_executor", k))}
        return {"policy_state_age_p99_ms": float(age) if age is not None else None,
                "policy_cycles": cycles,
                "policy_skipped_cycles": skipped,
                "policy_skipped_by_reason": reasons,
                "policy_skipped_pct": (100.0 * skipped / cycles) if cycles else None,
                "shield_command_timeouts": self.since_start("safety_shield", "command_timeouts")}


class Coordinator(Node):
    """Drive a sequence of goals through the sim bridge and watch the arm reach them."""

    def __init__(self, success_radius: float = 0.02, success_speed: float = 0.05, task: str = "reach",
                 **kwargs) -> None:
        super().__init__("simreal_coordinator", **kwargs)
        self.task = task
        self.puck: np.ndarray | None = None
        self._puck_last: tuple[float, np.ndarray] | None = None
        self.puck_speed = float("inf")
        self.robot = load_robot()
        self.order = JointOrder(self.robot.joint_names)
        self.success_radius, self.success_speed = success_radius, success_speed
        self.figures = RunFigures()
        self.flange: np.ndarray | None = None
        self.flange_speed = float("inf")
        self.goal: np.ndarray | None = None
        self.goal_stamp = 0.0
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(JointState, "/simreal/sim/ground_truth", self._on_truth, 10)
        self.create_subscription(PointStamped, "/simreal/goal", self._on_goal, latched)
        if task == "push":
            self.create_subscription(PoseStamped, "/simreal/sim/object_ground_truth", self._on_puck, 10)
        self.create_subscription(DiagnosticArray, "/simreal/shield/interventions", self._on_interventions, 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.create_subscription(Float64MultiArray, "/forward_position_controller/commands", self._on_sent, 50)
        self.create_subscription(Float64MultiArray, "/simreal/policy/command", self._on_policy, 50)
        self.next_goal = self.create_client(Trigger, "/sim_bridge/next_goal")

    # ------------------------------------------------------------------ callbacks
    def _on_truth(self, msg: JointState) -> None:
        q, dq, _ = self.order.arrays(msg)
        self.flange = self.robot.fk(q)[:3, 3]
        if dq is not None:
            self.flange_speed = float(np.linalg.norm(self.robot.jacobian(q)[:3] @ dq))

    def _on_puck(self, msg: PoseStamped) -> None:
        p = np.array([msg.pose.position.x, msg.pose.position.y])
        t = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        if self._puck_last is not None and t > self._puck_last[0]:
            self.puck_speed = float(np.linalg.norm(p - self._puck_last[1]) / (t - self._puck_last[0]))
        self._puck_last = (t, p)
        self.puck = p

    def _on_goal(self, msg: PointStamped) -> None:
        self.goal = np.array([msg.point.x, msg.point.y, msg.point.z])
        self.goal_stamp = time.monotonic()

    def _on_interventions(self, msg: DiagnosticArray) -> None:
        self.figures.interventions += len(msg.status)

    def _on_sent(self, msg: Float64MultiArray) -> None:
        self.figures.sent_commands += 1

    def _on_policy(self, msg: Float64MultiArray) -> None:
        self.figures.policy_commands += 1

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        levels = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
        for status in msg.status:
            level = status.level if isinstance(status.level, int) else int.from_bytes(status.level, "little")
            self.figures.diagnostics_seen[status.name] = levels.get(level, str(level))
            self.figures.observe(status.name.split(":")[0], {kv.key: kv.value for kv in status.values})
            for kv in status.values:
                if "p99" in kv.key and ("latency" in kv.key or "compute" in kv.key) and "policy" in status.name:
                    try:
                        value = float(kv.value)
                    except ValueError:
                        continue
                    self.figures.policy_latency_p99_ms = value * 1000.0 if kv.key.endswith("_s") else value

    # ------------------------------------------------------------------ state
    def mark_started(self) -> None:
        """The graph is up: the run's counters count from here (:meth:`RunFigures.mark_started`)."""
        self.figures.mark_started()

    def distance(self) -> float:
        if self.task == "push":
            if self.puck is None or self.goal is None:
                return float("inf")
            return float(np.linalg.norm(self.goal[:2] - self.puck))
        if self.flange is None or self.goal is None:
            return float("inf")
        return float(np.linalg.norm(self.goal - self.flange))

    def reached(self) -> bool:
        speed = self.puck_speed if self.task == "push" else self.flange_speed
        return self.distance() < self.success_radius and speed < self.success_speed

    def request_next_goal(self):
        """Ask the sim bridge for a new goal; returns the service future (or None if not ready)."""
        if not self.next_goal.service_is_ready():
            return None
        return self.next_goal.call_async(Trigger.Request())
