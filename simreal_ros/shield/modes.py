"""Modes for a staged rollout, the bumpless blend between sources, and automatic revert.

==========  ==================================================================
mode        what drives the arm
==========  ==================================================================
active      the policy's command (filtered)
shadow      the baseline controller's command; the policy's command is filtered
            and logged with what it would have done, never sent
blend       ``baseline + alpha (policy - baseline)``
hold        nothing: decelerate within limits, then hold position
==========  ==================================================================

Every change of the driving source goes through ``alpha`` (0 = baseline, 1 = policy), which
ramps at ``ramp_rate`` per second toward the mode's target, so a mode change never makes
the request jump; the filter's rate limits smooth what is left (e.g. leaving ``hold``).

Revert: when the share of cycles with an intervention over a sliding window exceeds a
threshold while the policy drives (active/blend), or a monitor requests it, the shield
switches to the revert target (``baseline`` -> shadow mode, or ``hold``) and *latches*:
active/blend are refused until an explicit reset.
"""

from __future__ import annotations

import math
from collections import deque

MODES = ("active", "shadow", "blend", "hold")
REVERT_TARGETS = ("baseline", "hold")


class ModeManager:
    """Current mode, blend factor and revert latch. Time is the shield's monotonic clock."""

    def __init__(self, mode: str = "active", blend_alpha: float = 0.5, ramp_rate: float = 1.0,
                 revert_window: float = 1.0, revert_fraction: float = 0.5, revert_min_steps: int = 10,
                 revert_target: str = "baseline") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if revert_target not in REVERT_TARGETS:
            raise ValueError(f"revert_target must be one of {REVERT_TARGETS}, got {revert_target!r}")
        self.mode = mode
        self.blend_alpha = blend_alpha
        self.ramp_rate = ramp_rate
        self.window = revert_window
        self.fraction = revert_fraction
        self.min_steps = revert_min_steps
        self.revert_target = revert_target
        self.alpha = self.target_alpha(mode, 0.0)
        self.reverted: str | None = None  # reason, while latched
        self._events: deque[tuple[float, bool]] = deque()
        self._hits = 0

    # ------------------------------------------------------------------ mode
    def target_alpha(self, mode: str | None = None, current: float | None = None) -> float:
        mode = mode or self.mode
        if mode == "active":
            return 1.0
        if mode == "shadow":
            return 0.0
        if mode == "blend":
            return self.blend_alpha
        return self.alpha if current is None else current  # hold keeps the mix it had

    def set_mode(self, mode: str) -> tuple[bool, str]:
        """Change mode; refused (with the reason) for an unknown mode or, while a revert is
        latched, for modes in which the policy would drive."""
        if mode not in MODES:
            return False, f"unknown mode {mode!r}; allowed: {list(MODES)}"
        if self.reverted is not None and mode in ("active", "blend"):
            return False, f"reverted ({self.reverted}); reset before switching to '{mode}'"
        self.mode = mode
        self._events.clear()
        self._hits = 0
        return True, f"mode {mode}"

    def advance(self, dt: float) -> float:
        """Ramp ``alpha`` toward the mode's target over ``dt`` seconds; returns it."""
        target = self.target_alpha()
        step = self.ramp_rate * max(dt, 0.0)
        if not math.isfinite(step):
            step = 1.0
        if self.alpha < target:
            self.alpha = min(target, self.alpha + step)
        elif self.alpha > target:
            self.alpha = max(target, self.alpha - step)
        return self.alpha

    @property
    def policy_drives(self) -> bool:
        return self.mode in ("active", "blend") and self.alpha > 0.0

    # ------------------------------------------------------------------ revert
    def record(self, now: float, intervened: bool) -> str | None:
        """Count one cycle in which the policy drove; returns the revert reason if it trips."""
        ev = self._events
        ev.append((now, intervened))
        self._hits += intervened
        while ev and (now - ev[0][0] > self.window or ev[0][0] > now):
            self._hits -= ev.popleft()[1]
        if len(ev) >= self.min_steps and self._hits > self.fraction * len(ev):
            return self.revert(f"interventions in {self._hits} of the last {len(ev)} cycles "
                               f"(> {self.fraction:.0%} over {self.window:g} s)")
        return None

    def revert(self, reason: str) -> str:
        """Switch to the revert target and latch with ``reason``."""
        self.reverted = reason
        self.mode = "shadow" if self.revert_target == "baseline" else "hold"
        self._events.clear()
        self._hits = 0
        return reason

    def clear_revert(self) -> None:
        self.reverted = None
