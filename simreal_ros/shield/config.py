"""Settings of the safety shield, validated on construction (errors name the field and the
allowed range). No ROS imports."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simreal_ros.shield.modes import MODES, REVERT_TARGETS

COMMAND_MODES = ("position", "effort")


def _num(name: str, value, low: float, high: float = math.inf, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = f"({low:g}" if low_open else f"[{low:g}"
        raise ValueError(f"ShieldConfig.{name} = {value!r}: allowed finite values in {lo}, {high:g}]")


@dataclass(frozen=True)
class ShieldConfig:
    """Settings of :class:`Shield` (SI units; times on the caller's monotonic clock).

    Attributes:
        position_margin: kept inside the robot's position limits (rad).
        command_timeout: no fresh command for this long -> controlled stop and hold (s).
        state_timeout: no fresh joint state for this long -> stop and latch a fault (s);
            before the first proposal has been forwarded (start-up) it only holds.
        control_period: expected step period (s); the node's watchdog timer period.
        max_step_gap: longest step over which the motion is continued; after a longer gap
            it restarts from rest. Also the sampling slack of the braking distance (s).
        min_step: steps closer than this repeat the previous command (s).
        mode: initial mode, one of ``active|shadow|blend|hold``.
        blend_alpha: policy share in ``blend`` mode.
        blend_ramp_rate: change of the policy share per second on a mode change (1/s).
        revert_window, revert_fraction, revert_min_steps: revert when more than
            ``revert_fraction`` of at least ``revert_min_steps`` cycles within
            ``revert_window`` seconds needed an intervention.
            ``revert_fraction = 1`` disables the automatic revert.
        revert_target: ``baseline`` (shadow mode) or ``hold``.
        command_mode: ``position`` (joint targets) or ``effort`` (joint torques).
        stiffness, damping: impedance gains used for the position-mode torque check
            (default: the sim's ``DEFAULT_STIFFNESS``/``DEFAULT_DAMPING``).
        cartesian_box: optional ``((x, y, z) min, (x, y, z) max)`` for the flange (m).
    """

    position_margin: float = 0.01
    command_timeout: float = 0.1
    state_timeout: float = 0.25
    control_period: float = 0.05
    max_step_gap: float = 0.1
    min_step: float = 1e-4
    mode: str = "active"
    blend_alpha: float = 0.5
    blend_ramp_rate: float = 1.0
    revert_window: float = 1.0
    revert_fraction: float = 0.5
    revert_min_steps: int = 10
    revert_target: str = "baseline"
    command_mode: str = "position"
    stiffness: tuple[float, ...] | None = None
    damping: tuple[float, ...] | None = None
    cartesian_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None

    def __post_init__(self) -> None:
        _num("position_margin", self.position_margin, 0.0, 0.5)
        _num("command_timeout", self.command_timeout, 0.0, 10.0, low_open=True)
        _num("state_timeout", self.state_timeout, 0.0, 10.0, low_open=True)
        _num("control_period", self.control_period, 1e-4, 1.0)
        _num("max_step_gap", self.max_step_gap, self.control_period, 1.0)
        _num("min_step", self.min_step, 1e-6, self.control_period)
        _num("blend_alpha", self.blend_alpha, 0.0, 1.0)
        _num("blend_ramp_rate", self.blend_ramp_rate, 0.0, 1e6, low_open=True)
        _num("revert_window", self.revert_window, 0.0, 3600.0, low_open=True)
        _num("revert_fraction", self.revert_fraction, 0.0, 1.0)
        _num("revert_min_steps", self.revert_min_steps, 1, 1e9)
        for name, value, allowed in (("mode", self.mode, MODES), ("revert_target", self.revert_target, REVERT_TARGETS),
                                     ("command_mode", self.command_mode, COMMAND_MODES)):
            if value not in allowed:
                raise ValueError(f"ShieldConfig.{name} = {value!r}: allowed one of {list(allowed)}")
        if self.stiffness is None or self.damping is None:
            from simreal_ros.sim.arm import DEFAULT_DAMPING, DEFAULT_STIFFNESS
            object.__setattr__(self, "stiffness", tuple(self.stiffness or DEFAULT_STIFFNESS))
            object.__setattr__(self, "damping", tuple(self.damping or DEFAULT_DAMPING))
        for name, low in (("stiffness", 1e-3), ("damping", 0.0)):  # a target needs stiffness to act
            vals = getattr(self, name)
            if not all(isinstance(x, (int, float)) and low <= x <= 1e6 for x in vals):
                raise ValueError(f"ShieldConfig.{name} = {vals!r}: allowed values in [{low:g}, 1e6]")
        if self.cartesian_box is not None:
            lo, hi = (np.asarray(b, dtype=float) for b in self.cartesian_box)
            if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo)) or not np.all(lo < hi):
                raise ValueError(f"ShieldConfig.cartesian_box = {self.cartesian_box!r}: "
                                 "allowed ((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max")
