"""The shield's cycle as a node runs it, without ROS: when to step, what to publish, braking
until still after deactivation, and the status summary. No ROS imports.

The node (``nodes/shield_node.py``) only converts messages and publishes what this returns::

    run = ShieldRuntime(Shield(robot, cfg))
    run.activate()
    cycle = run.on_command("policy", values, kind, now)     # or run.on_timer(now)
    if cycle is not None: publish(cycle.output); log(cycle.events)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from simreal_ros.shield.core import Shield, ShieldOutput

#: Status levels of :meth:`ShieldRuntime.status` (the node maps them onto DiagnosticStatus).
OK, WARN, ERROR = "ok", "warn", "error"


@dataclass
class Cycle:
    """One step, whether its output is to be published, and what changed with it.

    ``events``: ``(level, text)`` pairs worth a log line (a revert latched, a new hold reason,
    the end of braking after deactivation); ``status_changed``: the mode, fault, e-stop,
    revert or hold reason changed (publish the status now, not only on the timer);
    ``stopped``: the braking after :meth:`ShieldRuntime.deactivate` ended with this cycle.
    """

    output: ShieldOutput
    events: list[tuple[str, str]] = field(default_factory=list)
    status_changed: bool = False
    publish: bool = True
    stopped: bool = False


class ShieldRuntime:
    """Drives a :class:`Shield` the way the deployed node does.

    * It steps when the driving source's command arrives, and on the watchdog timer when no
      step happened for 1.5 periods or the driving command is stale, so a silent proposer is
      stopped within ``command_timeout`` plus one period.
    * Active: every new output is published. After :meth:`deactivate` it keeps publishing
      while the shield brakes (mode ``hold``) and stops once the command is stationary (the
      arm's controller then holds the last target).
    """

    def __init__(self, shield: Shield) -> None:
        self.shield = shield
        self.active = False
        self.stopping = False
        self.bad_states = 0
        self._last_step = -math.inf
        self._last_pub_time = -math.inf
        self._last_sent: np.ndarray | None = None
        self._status_key = None

    # ------------------------------------------------------------------ lifecycle
    def activate(self, mode: str) -> tuple[bool, str]:
        """Start forwarding in ``mode`` (the core restarts from the measured state, unless it is
        still braking from a deactivation: then the motion continues smoothly)."""
        if not self.stopping:
            self.shield.restart()
        self.stopping = False
        self.active = True
        return self.shield.set_mode(mode)

    def deactivate(self) -> bool:
        """Stop forwarding: brake (mode hold). Returns True when nothing is left to brake (the
        sent targets stand still: publishing can stop now); False: keep stepping and
        publishing until the command is stationary (:attr:`stopping`; the cycle that ends it
        has ``stopped`` set)."""
        if self.active:
            self.shield.set_mode("hold")
            self.stopping = not self.shield.at_rest
        self.active = False
        return not self.stopping

    @property
    def running(self) -> bool:
        return self.active or self.stopping

    # ------------------------------------------------------------------ inputs
    def on_state(self, q, dq, stamp: float, now: float) -> str | None:
        """A joint state arrived (``dq`` None: no velocities, taken as 0). Returns why it was
        rejected, or None."""
        if dq is None:
            dq = np.zeros_like(q)
        try:
            if self.shield.update_state(q, dq, stamp, now):
                return None
        except ValueError as exc:  # an absurd stamp
            return str(exc)
        return "non-finite, implausible, or a stamp that did not advance (a frozen driver)"

    @property
    def driver(self) -> str | None:
        """The source whose command a step waits for (None in hold)."""
        sh = self.shield
        if sh.mode == "hold":
            return None
        return "baseline" if sh.modes.alpha <= 0.0 else "policy"

    def on_command(self, source: str, values, kind: str, now: float) -> tuple[bool, Cycle | None]:
        """A proposal arrived: (accepted, the cycle it triggered or None)."""
        ok = self.shield.propose(source, values, kind=kind, now=now)
        cycle = self.step(now) if self.running and source == self.driver else None
        return ok, cycle

    def rejection(self, kind: str, n_values: int) -> str:
        """Why :meth:`on_command` refused a proposal labelled ``kind`` with ``n_values`` values."""
        mode = self.shield.config.command_mode
        if kind != mode:
            return f"labelled '{kind or '(none)'}', the shield takes '{mode}' commands"
        return f"non-finite, implausible or {n_values} values for {len(self.shield.names)} joints"

    def on_timer(self, now: float) -> Cycle | None:
        """The watchdog timer (period ``control_period``)."""
        if not self.running:
            return None
        drv = self.driver
        stale = drv is None or not self.shield.command_fresh(drv, now)
        if stale or now - self._last_step >= 1.5 * self.shield.config.control_period:
            return self.step(now)
        return None

    # ------------------------------------------------------------------ cycle
    def step(self, now: float) -> Cycle | None:
        out = self.shield.step(now)
        self._last_step = now
        if out.command is None or out.time <= self._last_pub_time:
            return None
        if self.stopping and self._last_sent is not None and np.array_equal(out.command, self._last_sent):
            self.stopping = False  # stationary: stop publishing
            return Cycle(out, [(OK, "inactive: holding")], publish=False, stopped=True)
        events: list[tuple[str, str]] = []
        self._last_pub_time = out.time
        self._last_sent = out.command
        key = (out.mode, out.fault, out.estop, out.reverted, out.reason.split(" (")[0])
        changed = key != self._status_key
        if changed:
            if out.reverted and (self._status_key is None or not self._status_key[3]):
                events.append((ERROR, f"reverted to {out.mode}: {out.reverted} (latched until ~/reset)"))
            if out.reason:
                events.append((WARN, f"holding: {out.reason}"))
            self._status_key = key
        return Cycle(out, events, changed)

    def status(self, now: float) -> tuple[str, str, dict[str, str]]:
        """(level, one-line text, key/value details) for ``/diagnostics``."""
        sh = self.shield
        out = sh.last_output
        if out is not None and (out.fault or out.estop):
            level, text = ERROR, out.fault or f"e-stop: {sh.estop_reason}"
        elif out is not None and (out.reverted or out.reason):
            level, text = WARN, out.reverted and f"reverted: {out.reverted}" or out.reason
        else:
            level, text = OK, "forwarding" if self.active else "inactive"
        values = {"lifecycle": "active" if self.active else "inactive", "mode": sh.mode,
                  "command_mode": sh.config.command_mode,
                  "source": out.source if out else "", "alpha": f"{sh.modes.alpha:.3f}",
                  "fault": sh.fault or "", "estop": str(sh.estop_reason is not None).lower(),
                  "reverted": sh.modes.reverted or "", "reason": out.reason if out else "",
                  "bad_state_messages": str(self.bad_states)}
        drv = self.driver
        if drv is not None:
            values["command_age"] = f"{sh.command_age(drv, out.time if out else now):.4f}"
        values.update({k: str(v) for k, v in sorted(sh.counts.items())})
        return level, text, values


class StepStamps:
    """Stamps (integer ns on the ROS clock, the clock the driver stamps its joint states with) of
    the shield's step times, so a bag's sent commands and measured states line up (calibration
    replays one against the other). The shield steps on the steady clock (immune to system clock
    steps); the offset between the two is read between two steady readings (the tightest of
    three), kept constant (stamp differences are the shield's exact step times: a check of a bag
    derives acceleration and jerk from them) and re-read once a second, taken over only when the
    system clock was stepped by more than 10 ms. It is added in integer ns (float seconds since
    1970 resolve only 0.24 us). ``step_ns``/``ros_ns``: the two clocks' readings in ns."""

    def __init__(self, step_ns: Callable[[], int], ros_ns: Callable[[], int]) -> None:
        self.step_ns, self.ros_ns = step_ns, ros_ns
        self.ros_minus_step: int | None = None  # ROS time - the step clock, ns
        self._read_at = -1  # step time (ns) the offset was last read at

    def __call__(self, t: float) -> int:
        ns = int(round(t * 1e9))
        if ns - self._read_at >= 1_000_000_000 or self._read_at < 0:
            self._read_at = ns
            best = None
            for _ in range(3):
                a = self.step_ns()
                r = self.ros_ns()
                b = self.step_ns()
                if best is None or b - a < best[0]:
                    best = (b - a, r - (a + b) // 2)
            if self.ros_minus_step is None or abs(best[1] - self.ros_minus_step) > 10_000_000:
                self.ros_minus_step = best[1]
        return ns + self.ros_minus_step
