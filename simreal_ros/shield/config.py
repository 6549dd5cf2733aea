"""Settings of the safety shield, declared once (type, default, bounds, unit, description).

The node's parameters, ``config/shield.yaml``'s validation and every offline user (the
evaluator, ``simreal sim``'s report, ``simreal bag check-limits``) derive from
:class:`ShieldConfig`; :func:`load_shield_config` reads it the way the deployed node does.
Limits and controller gains are not settings: they come from the robot description. No ROS
imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simreal_ros.resources import resource
from simreal_ros.settings import SettingError, from_settings, setting, settings_of, validate_fields
from simreal_ros.shield.modes import MODES, REVERT_TARGETS

COMMAND_MODES = ("position", "effort")
NODE_NAME = "safety_shield"


def _box_check(v) -> str | None:
    return None if all(lo < hi for lo, hi in zip(v[:3], v[3:])) else "each min must be below its max"


@dataclass(frozen=True)
class ShieldConfig:
    """Settings of :class:`~simreal_ros.shield.Shield` (SI units; times on the caller's
    monotonic clock). See each field's declaration for its meaning and bounds."""

    mode: str = setting("active", "who drives: active (policy), shadow (baseline; policy logged), blend, hold",
                        choices=MODES)
    command_mode: str = setting("position", "what is sent: position (joint targets) or effort (joint torques); "
                                "a proposal of the other kind is refused", choices=COMMAND_MODES)
    position_margin: float = setting(0.01, "kept inside the robot's position limits", unit="rad",
                                     low=0.0, high=0.5)
    tracking_margin: float = setting(0.2, "share of the velocity limit kept free for the arm's controller to "
                                     "overshoot the sent target (position mode): targets move at most "
                                     "(1 - margin) x the limit, and a measured speed above the limit makes the "
                                     "target pull the joint back", low=0.0, high=0.5)
    coupling_min_step: float = setting(0.0, "steps at least this long check the arm's inertial coupling (position "
                                       "mode): the net torques of the targets are scaled down until no joint's "
                                       "predicted speed exceeds its limit (a held 20 Hz target step of the heavy "
                                       "joints drove the wrist to 1.15 x its limit; at 50 Hz, joint 1 reversing "
                                       "drove joint 3 to 1.002 x); 0: every step",
                                       unit="s", low=0.0, high=10.0)
    overshoot_inertia_scale: float = setting(2.0, "near a position limit the target is kept where the arm, were "
                                             "the target held, would not overshoot past the limit (position mode); "
                                             "the arm's inertia is taken as this multiple of the robot "
                                             "description's (unknown payload and its sag, armature, coupling: 1.4 x "
                                             "fitted one measured overshoot, 1.5 x still let two 20 s runs pass the "
                                             "limit by 2 mrad)", low=1.0, high=10.0)
    command_timeout: float = setting(0.1, "no fresh command for this long -> controlled stop and hold", unit="s",
                                     low=0.0, low_open=True, high=10.0)
    state_timeout: float = setting(0.25, "no fresh joint state (one whose stamp advanced) for this long -> stop and "
                                   "latch a fault (before the first forwarded proposal it only holds)", unit="s",
                                   low=0.0, low_open=True, high=10.0)
    control_period: float = setting(0.05, "expected step period: the proposers' period and the watchdog timer's",
                                    unit="s", low=1e-4, high=1.0)
    max_step_gap: float = setting(0.1, "longest step over which the motion is continued (>= control_period); after "
                                  "a longer one it restarts from rest; also the sampling slack of the braking "
                                  "distance", unit="s", low=1e-4, high=1.0)
    min_step: float = setting(1e-4, "steps closer than this repeat the previous command (<= control_period)",
                              unit="s", low=1e-6, high=0.01)
    blend_alpha: float = setting(0.5, "policy share in blend mode", low=0.0, high=1.0)
    blend_ramp_rate: float = setting(1.0, "change of the policy share per second on a mode change (bumpless)",
                                     unit="1/s", low=0.0, low_open=True, high=1e6)
    revert_window: float = setting(1.0, "sliding window of the automatic revert", unit="s",
                                   low=0.0, low_open=True, high=3600.0)
    revert_fraction: float = setting(0.5, "revert when more than this share of at least revert_min_steps cycles in "
                                     "the window needed an intervention (1: never)", low=0.0, high=1.0)
    revert_min_steps: int = setting(10, "cycles in the window before the revert can trip", low=1, high=1_000_000)
    revert_target: str = setting("baseline", "what takes over on a revert: baseline (shadow mode) or hold",
                                 choices=REVERT_TARGETS)
    max_state_speed: float = setting(2.0, "a joint state whose speed exceeds this multiple of the velocity limit, or "
                                     "whose position is more than implausible_position rad outside the limits, is "
                                     "implausible: a latched fault", low=1.0, high=100.0)
    implausible_position: float = setting(0.2, "see max_state_speed", unit="rad", low=0.0, high=10.0)
    cartesian_box_enabled: bool = setting(False, "keep the arm (the flange, and with cartesian_box_links its links) "
                                          "inside cartesian_box: the sent target and its braking path")
    cartesian_box_links: bool = setting(True, "the box also holds the collision geometry of every moving link (the "
                                        "URDF's collision shapes, bounded by capsules), not only the flange point")
    cartesian_box: tuple[float, ...] = setting((-1.0, -1.0, 0.1, 1.0, 1.0, 1.5), "xmin ymin zmin xmax ymax zmax, "
                                               "robot base frame (zmin: the sim scene's table top)", unit="m",
                                               low=-10.0, high=10.0, length=6, check=_box_check)
    cartesian_box_clearance: float = setting(0.04, "targets and their braking paths keep this far inside "
                                             "cartesian_box: room for the arm's tracking error (it overshoots a "
                                             "target that stops at the box, sags under an unknown payload: 23 mm "
                                             "measured with bang-bang requests in the sim)", unit="m", low=0.0,
                                             high=0.5)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.max_step_gap < self.control_period:
            raise SettingError(f"ShieldConfig 'max_step_gap' = {self.max_step_gap}: must be >= 'control_period' "
                               f"= {self.control_period}")
        if self.min_step > self.control_period:
            raise SettingError(f"ShieldConfig 'min_step' = {self.min_step}: must be <= 'control_period' "
                               f"= {self.control_period}")

    @property
    def box(self) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
        """``(min, max)`` corners of the Cartesian box, or None when it is disabled."""
        if not self.cartesian_box_enabled:
            return None
        b = self.cartesian_box
        return (b[0], b[1], b[2]), (b[3], b[4], b[5])


SHIELD_SETTINGS = settings_of(ShieldConfig)


def read_node_parameters(path: str | Path, node: str) -> dict[str, Any]:
    """The ``<node>: ros__parameters:`` mapping of a ROS 2 parameter file (errors name the file)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingError(f"{path}: malformed YAML: {exc}") from None
    section = data.get(node) if isinstance(data, dict) else None
    params = section.get("ros__parameters") if isinstance(section, dict) else None
    if not isinstance(params, dict):
        raise SettingError(f"{path}: needs '{node}: ros__parameters:' (a mapping)")
    return params


def load_shield_config(params_file: str | Path | None = None, **overrides: Any) -> ShieldConfig:
    """The shield's settings as the deployed node gets them: ``config/shield.yaml`` (or
    ``params_file``), then ``overrides`` (e.g. what the graph sets for simulation).

    Keys of the file that are not settings of :class:`ShieldConfig` are the node's wiring
    (topics, ``autostart``, ...) and are ignored here; an unknown override raises.
    """
    path = Path(params_file) if params_file else resource("config", "shield.yaml")
    values = read_node_parameters(path, NODE_NAME)
    names = {s.name for s in SHIELD_SETTINGS}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise SettingError(f"unknown shield setting(s) {unknown} (allowed: {sorted(names)})")
    values = {**values, **overrides}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
    return from_settings(ShieldConfig, values, str(path))
