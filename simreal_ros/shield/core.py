"""The safety shield: validated inputs, watchdogs, e-stop, modes and the limit filter.

Usage (the node, the offline evaluator and tests all drive it the same way)::

    shield = Shield(load_robot(), ShieldConfig(mode="active"))
    shield.update_state(q, dq, stamp=t_meas, now=clock())
    shield.propose("policy", target, now=clock())
    out = shield.step(now=clock())       # out.command is what goes to the arm

``now`` is always the caller's monotonic clock (seconds). No ROS imports.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.shield.box import BoxGuard
from simreal_ros.shield.config import ShieldConfig
from simreal_ros.shield.coupling import JointCoupling
from simreal_ros.shield.filter import MotionState, PositionFilter, StepResult, effort_step
from simreal_ros.shield.inputs import checked_time, implausible_state, joint_vector
from simreal_ros.shield.limits import ShieldLimits
from simreal_ros.shield.modes import ModeManager
from simreal_ros.shield.watchdog import Freshness

__all__ = ["COMMAND_KINDS", "SOURCES", "Intervention", "Shield", "ShieldConfig", "ShieldOutput"]

SOURCES = ("policy", "baseline")
#: What a proposal may be: joint position targets (rad) or joint torques (N m). A proposal of
#: the other kind than the shield's ``command_mode`` is refused.
COMMAND_KINDS = ("position", "effort")


class Intervention(NamedTuple):
    """One joint's command changed by one limit (values in the command's unit)."""

    joint: str
    kind: str
    requested: float
    applied: float


@dataclass(slots=True)
class ShieldOutput:
    """Result of one :meth:`Shield.step`.

    Attributes:
        command: what to send (robot joint order), or None before the first joint state.
        interventions: changes made to the driving request this cycle.
        mode: current mode; ``source``: what produced the request (``policy``,
            ``baseline``, ``blend``, ``hold``).
        fault: latched fault text or None; ``estop``: e-stop latched; ``reverted``:
            latched revert reason or None.
        reason: why the shield holds this cycle ('' while forwarding).
        braking: every joint was braked (a joint could not have stopped before a limit,
            or the Cartesian box vetoed the command).
        infeasible: the measured state made the torque limits incompatible with the
            motion limits; the motion limits were kept and the torque met as closely as
            they allow (position mode).
        shadow_command/shadow_interventions: in shadow mode, what the policy's command
            would have become had the policy been driving (None without a fresh policy
            command): filtered from the policy's own would-be command trajectory, which starts
            at the sent one when the policy's commands (re)start, for an arm that follows those
            commands (the measured arm follows the baseline's: its tracking and torque limits
            would judge the policy by how far it is from the baseline).
    """

    time: float
    command: np.ndarray | None
    interventions: list[Intervention]
    mode: str
    source: str
    alpha: float
    fault: str | None = None
    estop: bool = False
    reverted: str | None = None
    reason: str = ""
    braking: bool = False
    infeasible: bool = False
    shadow_command: np.ndarray | None = None
    shadow_interventions: list[Intervention] = field(default_factory=list)


class Shield:
    """Sits between command proposers and the arm; nothing it outputs exceeds a limit.

    Args:
        robot: the robot model (all limits come from it).
        config: see :class:`ShieldConfig`.
    """

    def __init__(self, robot: RobotModel, config: ShieldConfig | None = None) -> None:
        self.robot = robot
        self.config = cfg = config or ShieldConfig()
        n = robot.n_joints
        self.names = robot.joint_names
        self.limits = ShieldLimits.from_robot(robot, cfg.position_margin, cfg.max_step_gap,
                                              velocity_scale=1.0 - cfg.tracking_margin)
        # the arm's controller gains come from the robot description (checked there against the limits)
        self.K = np.asarray(robot.gains.stiffness, dtype=float)
        self.D = np.asarray(robot.gains.damping, dtype=float)
        if self.K.shape != (n,) or self.D.shape != (n,):
            raise ValueError(f"robot '{robot.name}': stiffness/damping need {n} values (one per joint)")
        self.modes = ModeManager(cfg.mode, cfg.blend_alpha, cfg.blend_ramp_rate, cfg.revert_window,
                                 cfg.revert_fraction, cfg.revert_min_steps, cfg.revert_target)
        self.counts: Counter[str] = Counter()
        self._cmd_fresh = {s: Freshness(cfg.command_timeout, f"{s} command") for s in SOURCES}
        self._cmd: dict[str, np.ndarray | None] = dict.fromkeys(SOURCES)
        self._state_fresh = Freshness(cfg.state_timeout, "joint state")
        self._q = self._dq = None
        self.state_stamp = -math.inf
        self._motion: MotionState | None = None
        # shadow mode: the trajectory the policy's filtered commands would have made (None: restart
        # from the sent one); the rate limits of a would-be command are judged against the
        # policy's previous would-be command, not against the baseline that drives
        self._shadow_motion: MotionState | None = None
        self._last: ShieldOutput | None = None
        self.fault: str | None = None
        self.estop_reason: str | None = None
        self._holding_reason = ""
        self._armed = False  # the state watchdog latches only once a proposal has been forwarded
        self._stale_steps = 0
        self._restart = False
        # the target may lead the measured arm by the controller's steady-state lag at the
        # (tracking-scaled) velocity limit, no more (see shield.filter)
        self._pos_filter = PositionFilter(self.limits, self.K, self.D, track_lead=self.D * self.limits.v / self.K,
                                          arm_limits=(robot.limits.position_min, robot.limits.position_max,
                                                      robot.limits.velocity),
                                          coupling=JointCoupling(robot, robot.limits.velocity, self.D)
                                          if cfg.command_mode == "position" else None,
                                          coupling_min_dt=cfg.coupling_min_step,
                                          overshoot_inertia_scale=cfg.overshoot_inertia_scale)
        self._v_plausible = cfg.max_state_speed * robot.limits.velocity
        self._q_plausible = (robot.limits.position_min - cfg.implausible_position,
                             robot.limits.position_max + cfg.implausible_position)
        self._box = None
        if cfg.box is not None:
            self._box = BoxGuard(robot, cfg.box, PositionFilter(self.limits, self.K, self.D),
                                 path_step=max(cfg.control_period, 0.02), links=cfg.cartesian_box_links,
                                 clearance=cfg.cartesian_box_clearance)

    # ------------------------------------------------------------------ inputs
    def _valid(self, values, names, what: str) -> np.ndarray | None:
        if names is not None and tuple(names) != self.names:
            self.counts[f"rejected_{what}"] += 1
            return None
        arr = joint_vector(values, len(self.names))
        if arr is None:
            self.counts[f"rejected_{what}"] += 1
        return arr

    def update_state(self, q, dq, stamp: float, now: float) -> bool:
        """Accept a measured/estimated joint state (robot order). Returns False (and counts it)
        for a wrong length or type, non-finite values, or a ``stamp`` that does not advance past
        the last accepted one: a frozen driver re-sending its last sample is stale, not fresh.
        Only an accepted state refreshes the state watchdog, which runs on ``now`` (the
        caller's monotonic clock); ``stamp`` (the driver's clock) only orders samples.
        A state outside what the arm can physically be in (far beyond the position limits, or
        faster than ``max_state_speed`` x the velocity limit) latches a fault.
        Raises ValueError for a non-finite or absurd ``now`` or ``stamp``.
        """
        now = checked_time(now)
        stamp = checked_time(stamp, "stamp")
        qa = self._valid(q, None, "state")
        if qa is None:
            return False
        dqa = self._valid(dq if dq is not None else np.zeros_like(qa), None, "state")
        if dqa is None:
            return False
        if stamp <= self.state_stamp:
            self.counts["repeated_state" if stamp == self.state_stamp else "reordered_state"] += 1
            return False
        why = implausible_state(qa, dqa, self.names, self._q_plausible, self._v_plausible)
        if why is not None:
            self.counts["rejected_state"] += 1
            if self.fault is None:
                self.fault = why
                self.counts["faults"] += 1
            return False
        self._q, self._dq, self.state_stamp = qa, dqa, stamp
        self._state_fresh.touch(now)
        return True

    def propose(self, source: str, values, *, kind: str, names=None, now: float | None = None) -> bool:
        """Offer a command from ``source`` (``policy``/``baseline``), robot joint order.

        ``kind`` says what the values are (``position`` targets or ``effort`` torques); a kind
        other than the shield's ``command_mode``, non-finite values, a wrong length or type,
        or names other than the robot's joint names in its order: rejected, counted, and the
        source's previous command is dropped (the shield holds until a valid one arrives).
        Returns whether it was accepted.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if now is None:
            raise ValueError("propose() needs now= (monotonic clock, s)")
        now = checked_time(now)
        if kind != self.config.command_mode:
            self.counts[f"rejected_{source}_kind"] += 1
            arr = None
        else:
            arr = self._valid(values, names, source)
        self._cmd[source] = arr
        if arr is None:
            self._cmd_fresh[source].clear()
            return False
        self._cmd_fresh[source].touch(now)
        return True

    # ------------------------------------------------------------------ operator
    def estop(self, reason: str = "e-stop requested") -> None:
        """Latch the e-stop: brake, then hold, until :meth:`reset`."""
        if self.estop_reason is None:
            self.counts["estops"] += 1
        self.estop_reason = reason or "e-stop requested"

    def reset(self, now: float) -> tuple[bool, str]:
        """Clear e-stop, faults and a latched revert; refused without a fresh joint state.
        Either way the next joint state is accepted whatever its stamp, so after a driver
        restart (its clock went back, every state was refused) a second reset succeeds."""
        now = checked_time(now)
        self.state_stamp = -math.inf
        if not self._state_fresh.fresh(now):
            return False, ("reset refused: no fresh joint state (the next one is accepted whatever its stamp; "
                           "reset again once states arrive)")
        self.estop_reason = None
        self.fault = None
        self.modes.clear_revert()
        return True, "reset"

    def set_mode(self, mode: str) -> tuple[bool, str]:
        return self.modes.set_mode(mode)

    def request_revert(self, reason: str) -> None:
        """An external monitor asks to stop trusting the policy (latched until reset)."""
        self.counts["reverts"] += 1
        self.modes.revert(f"requested: {reason}" if reason else "requested by a monitor")

    def restart(self) -> None:
        """Start over (e.g. after the node was inactive and another controller may have moved
        the arm): if the next step comes more than ``max_step_gap`` after the last sent
        command, it starts from the measured position at rest; a sooner one continues the
        sent motion (the arm is following it: jumping to the measured position would
        exceed every motion limit). The state watchdog is disarmed again."""
        self._restart = True
        self._armed = False
        self.state_stamp = -math.inf

    @property
    def last_output(self) -> ShieldOutput | None:
        return self._last

    @property
    def at_rest(self) -> bool:
        """Position mode: the sent targets stand still (their velocity and acceleration are 0),
        so the arm's controller holding the last one needs nothing more. Effort mode: never
        known here (a torque does not say whether the arm moves)."""
        st = self._motion
        if st is None:
            return True
        if self.config.command_mode != "position":
            return False
        return not (st.v.any() or st.a.any())

    def command_fresh(self, source: str, now: float) -> bool:
        """Is there a valid command from ``source`` younger than the command timeout?"""
        return self._cmd[source] is not None and self._cmd_fresh[source].fresh(now)

    def command_age(self, source: str, now: float) -> float:
        """Seconds since the last valid command from ``source`` (inf if none)."""
        return self._cmd_fresh[source].age(now)

    def state_fresh(self, now: float) -> bool:
        """Is the last accepted joint state younger than the state timeout?"""
        return self._state_fresh.fresh(now)

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last accepted (q, dq), or None."""
        return None if self._q is None else (self._q, self._dq)

    @property
    def mode(self) -> str:
        return self.modes.mode

    # ------------------------------------------------------------------ cycle
    def _hold_request(self, st: MotionState, state_ok: bool) -> np.ndarray:
        if self.config.command_mode == "position":
            return st.q  # stop here: the filter decelerates as hard as the limits allow
        return -self.D * self._dq if state_ok else np.zeros_like(st.q)

    def _filter(self, st: MotionState, request: np.ndarray, now: float, meas) -> StepResult:
        if self.config.command_mode == "position":
            check = None
            if self._box is not None:
                box, measured = self._box, None if meas is None else meas[0]
                box.reference_q = st.q
                box.h = min(max(now - st.t, self.config.min_step), self.limits.h)

                def check(q, v, a):
                    return box.ok(q, v, a, measured)
            return self._pos_filter.step(st, request, now, meas, check)
        return effort_step(self.limits, st, request, now, meas, self.D)

    def _interventions(self, request: np.ndarray, res: StepResult) -> list[Intervention]:
        if not res.clipped.any():
            return []
        return [Intervention(self.names[i], res.kinds[i], float(request[i]), float(res.command[i]))
                for i in np.flatnonzero(res.clipped)]

    def _repeat(self) -> ShieldOutput:
        """The last output again, with the operator's latches as they are now."""
        last = self._last
        estop = self.estop_reason is not None
        if last.estop != estop or last.fault != self.fault:
            last = replace(last, estop=estop, fault=self.fault)
        return last

    def step(self, now: float) -> ShieldOutput:
        """Compute the command to send at ``now`` (the caller's monotonic clock; a non-finite or
        absurd time raises ValueError and changes nothing)."""
        cfg, modes = self.config, self.modes
        now = checked_time(now)
        st = self._motion
        if self._restart:
            self._restart = False
            if st is not None and now - st.t > cfg.max_step_gap:
                self._motion = st = None
                self._shadow_motion = None
        if st is not None and not (now - st.t >= cfg.min_step):
            if now < st.t:
                self.counts["clock_backwards"] += 1
            return self._repeat()  # too soon (or clock went back): repeat, do not advance
        state_ok = self._state_fresh.fresh(now)
        if st is None:
            if self._q is None:
                return ShieldOutput(now, None, [], modes.mode, "hold", modes.alpha, self.fault,
                                    self.estop_reason is not None, modes.reverted, "waiting for joint state")
            n = len(self.names)
            q0 = (np.clip(self._q, self.limits.q_lo, self.limits.q_hi) if cfg.command_mode == "position"
                  else np.zeros(n))
            tau0, infeasible = None, False
            if cfg.command_mode == "position" and state_ok:
                tau0 = self.K * (q0 - self._q) - self.D * self._dq
                infeasible = bool((np.abs(tau0) > self.limits.tau).any())
            self._motion = MotionState(now, q0, np.zeros(n), np.zeros(n), tau0)
            self._last = ShieldOutput(now, q0.copy(), [], modes.mode, "hold", modes.alpha, self.fault,
                                      self.estop_reason is not None, modes.reverted, "starting: holding",
                                      infeasible=infeasible)
            return self._last
        self.counts["steps"] += 1
        # Stale at two consecutive steps latches the fault; the first stale step already holds.
        # (After a process stall the watchdog timer runs before the queued fresh states are
        # taken, so one stale step alone is not evidence of a dead stream.)
        self._stale_steps = 0 if state_ok else self._stale_steps + 1
        if self._stale_steps >= 2 and self.fault is None and self._armed:
            self.fault = f"joint state stale (> {cfg.state_timeout:g} s)"
            self.counts["faults"] += 1
        alpha = modes.advance(min(now - st.t, cfg.max_step_gap))
        meas = (self._q, self._dq) if state_ok else None

        reason, source, request = "", "hold", None
        if self.estop_reason is not None:
            reason = f"e-stop: {self.estop_reason}"
        elif self.fault is not None:
            reason = f"fault: {self.fault}"
        elif not state_ok:  # first stale step, or not yet armed (start-up): hold without latching
            reason = f"waiting for fresh joint state (timeout {cfg.state_timeout:g} s)"
        elif modes.mode == "hold":
            reason = "mode hold"
        else:
            need = [s for s, w in (("policy", alpha), ("baseline", 1.0 - alpha)) if w > 0.0]
            stale = [s for s in need if not self._cmd_fresh[s].fresh(now) or self._cmd[s] is None]
            if stale:
                reason = f"no fresh {' and '.join(stale)} command (timeout {cfg.command_timeout:g} s)"
            elif alpha >= 1.0:
                source, request = "policy", self._cmd["policy"]
            elif alpha <= 0.0:
                source, request = "baseline", self._cmd["baseline"]
            else:
                b = self._cmd["baseline"]
                source, request = "blend", b + alpha * (self._cmd["policy"] - b)
        if reason != self._holding_reason:
            if reason.startswith("no fresh"):
                self.counts["command_timeouts"] += 1
            self._holding_reason = reason

        if request is None:
            res = self._filter(st, self._hold_request(st, state_ok), now, meas)
            interventions = []
        else:
            self._armed = True
            res = self._filter(st, request, now, meas)
            interventions = self._interventions(request, res)
            if interventions:
                self.counts["interventions"] += len(interventions)
            if res.braking:
                self.counts["braking"] += 1
            if modes.policy_drives and source in ("policy", "blend"):
                why = modes.record(now, bool(interventions))
                if why is not None:
                    self.counts["reverts"] += 1
        if res.infeasible:
            self.counts["infeasible"] += 1

        shadow_cmd, shadow_iv = None, []
        if modes.mode == "shadow" and self._cmd["policy"] is not None and self._cmd_fresh["policy"].fresh(now):
            sst = self._shadow_motion if self._shadow_motion is not None else st
            position = self.config.command_mode == "position"
            would_be_arm = (sst.q, sst.v) if position and meas is not None and sst is not st else meas
            sres = self._filter(sst, self._cmd["policy"], now, would_be_arm)
            self._shadow_motion = sres.state
            shadow_cmd, shadow_iv = sres.command, self._interventions(self._cmd["policy"], sres)
        else:
            self._shadow_motion = None

        self._motion = res.state
        self._last = ShieldOutput(now, res.command, interventions, modes.mode, source, alpha, self.fault,
                                  self.estop_reason is not None, modes.reverted, reason, res.braking,
                                  res.infeasible, shadow_cmd, shadow_iv)
        return self._last
