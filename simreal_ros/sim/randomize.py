"""Domain randomization: a pure function of (nominal model, rng, ranges).

Every draw is uniform in the configured ``[low, high]`` interval (written next to each draw
below) and comes from the generator passed in, so a seed reproduces the draw exactly.
Ranges live in ``config/randomization.yaml``; see :func:`load_ranges`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import mujoco
import numpy as np
import yaml

from simreal_ros.resources import resource
from simreal_ros.robot.mujoco_model import PAYLOAD_MIN_MASS


def _interval(where: str, value: Any, low_bound: float = 0.0) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected [low, high], got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi or lo < low_bound:
        raise ValueError(f"{where}: need finite {low_bound} <= low <= high, got [{lo}, {hi}]")
    return lo, hi


@dataclass(frozen=True)
class DynamicsRanges:
    """Intervals of the dynamics draws. ``scale`` entries multiply the nominal value."""

    joint_friction: tuple[float, float] = (0.0, 0.0)  # Coulomb friction (frictionloss), N m
    joint_damping: tuple[float, float] = (0.0, 0.0)  # viscous damping, N m s/rad
    joint_armature: tuple[float, float] = (0.0, 0.0)  # reflected rotor inertia, kg m^2
    link_mass_scale: tuple[float, float] = (1.0, 1.0)
    com_offset: tuple[float, float] = (0.0, 0.0)  # |offset| per axis of every link's CoM, m
    stiffness_scale: tuple[float, float] = (1.0, 1.0)  # impedance controller gains
    damping_scale: tuple[float, float] = (1.0, 1.0)
    payload_mass: tuple[float, float] = (0.0, 0.0)  # kg, on the flange, not gravity compensated


@dataclass(frozen=True)
class SensorRanges:
    """Measurement imperfections; the draw picks one value per episode in each interval."""

    position_noise_std: tuple[float, float] = (0.0, 0.0)  # rad
    velocity_noise_std: tuple[float, float] = (0.0, 0.0)  # rad/s
    effort_noise_std: tuple[float, float] = (0.0, 0.0)  # N m
    position_bias: tuple[float, float] = (0.0, 0.0)  # |bias| per joint, rad
    observation_latency: tuple[float, float] = (0.0, 0.0)  # s
    action_latency: tuple[float, float] = (0.0, 0.0)  # s
    drop_probability: tuple[float, float] = (0.0, 0.0)  # per measurement


@dataclass(frozen=True)
class ContactRanges:
    """The push task's contact and object tracking (drawn by :mod:`simreal_ros.sim.push_env`)."""

    table_friction_scale: tuple[float, float] = (1.0, 1.0)  # x the task's puck-table friction
    puck_mass_scale: tuple[float, float] = (1.0, 1.0)  # x the task's puck mass
    puck_size_scale: tuple[float, float] = (1.0, 1.0)  # x the puck's radius and height
    table_height_offset: tuple[float, float] = (0.0, 0.0)  # m, signed: the table top's height error
    tracker_noise_std: tuple[float, float] = (0.0, 0.0)  # m, per axis of the tracked position
    tracker_latency: tuple[float, float] = (0.0, 0.0)  # s
    tracker_drop_probability: tuple[float, float] = (0.0, 0.0)  # per tracker sample


#: keys whose interval may be negative (signed quantities)
_SIGNED = {"table_height_offset"}
_SECTIONS = {"dynamics": DynamicsRanges, "sensor": SensorRanges, "contact": ContactRanges}


@dataclass(frozen=True)
class RandomizationRanges:
    dynamics: DynamicsRanges = field(default_factory=DynamicsRanges)
    sensor: SensorRanges = field(default_factory=SensorRanges)
    contact: ContactRanges = field(default_factory=ContactRanges)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "randomization") -> RandomizationRanges:
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping with sections {sorted(_SECTIONS)}")
        unknown = set(data) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"{where}: unknown section(s) {sorted(unknown)} (allowed: {', '.join(_SECTIONS)})")
        parts = {}
        for section, klass in _SECTIONS.items():
            entries = data.get(section) or {}
            allowed = {f.name for f in fields(klass)}
            bad = set(entries) - allowed
            if bad:
                raise ValueError(f"{where}.{section}: unknown key(s) {sorted(bad)} (allowed: {sorted(allowed)})")
            parts[section] = klass(**{k: _interval(f"{where}.{section}.{k}", v, -np.inf if k in _SIGNED else 0.0)
                                      for k, v in entries.items()})
        return cls(**parts)


def load_ranges(path: str | Path | None = None, profile: str = "default") -> RandomizationRanges:
    """Load a named profile (``nominal``, ``default``, ``wide``) from the ranges file."""
    path = Path(path) if path else resource("config", "randomization.yaml")
    data = yaml.safe_load(Path(path).read_text()) or {}
    profiles = data.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"{path}: no randomization profile '{profile}' (have: {sorted(profiles)})")
    return RandomizationRanges.from_dict(profiles[profile] or {}, f"{path}: profiles.{profile}")


@dataclass(frozen=True)
class Draw:
    """The values one randomization drew (per joint arrays in robot order)."""

    joint_friction: np.ndarray
    joint_damping: np.ndarray
    joint_armature: np.ndarray
    link_mass_scale: np.ndarray
    com_offset: np.ndarray  # (n_links, 3)
    stiffness_scale: np.ndarray
    damping_scale: np.ndarray
    payload_mass: float
    position_noise_std: float
    velocity_noise_std: float
    effort_noise_std: float
    position_bias: np.ndarray
    observation_latency: float
    action_latency: float
    drop_probability: float

    def as_dict(self) -> dict[str, Any]:
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}


def draw(rng: np.random.Generator, ranges: RandomizationRanges, n_joints: int) -> Draw:
    """Draw one set of values. Pure: depends only on ``rng``'s state and ``ranges``."""
    d, s = ranges.dynamics, ranges.sensor

    def u(iv: tuple[float, float], size: Any = None) -> Any:
        return rng.uniform(iv[0], iv[1], size)  # uniform in [low, high]

    def signed(iv: tuple[float, float], size: Any) -> np.ndarray:
        return u(iv, size) * rng.choice([-1.0, 1.0], size)  # magnitude uniform in [low, high], random sign

    return Draw(
        joint_friction=u(d.joint_friction, n_joints),
        joint_damping=u(d.joint_damping, n_joints),
        joint_armature=u(d.joint_armature, n_joints),
        link_mass_scale=u(d.link_mass_scale, n_joints),
        com_offset=signed(d.com_offset, (n_joints, 3)),
        stiffness_scale=u(d.stiffness_scale, n_joints),
        damping_scale=u(d.damping_scale, n_joints),
        payload_mass=float(u(d.payload_mass)),
        position_noise_std=float(u(s.position_noise_std)),
        velocity_noise_std=float(u(s.velocity_noise_std)),
        effort_noise_std=float(u(s.effort_noise_std)),
        position_bias=signed(s.position_bias, n_joints),
        observation_latency=float(u(s.observation_latency)),
        action_latency=float(u(s.action_latency)),
        drop_probability=float(u(s.drop_probability)),
    )


def apply_dynamics(model: mujoco.MjModel, nominal: mujoco.MjModel, sim_index: Any, values: Draw) -> None:
    """Write a draw's dynamics into ``model``, starting from ``nominal`` (never compounding)."""
    dof, links = sim_index.dof_adr, sim_index.link_bodies
    model.dof_frictionloss[dof] = nominal.dof_frictionloss[dof] + values.joint_friction
    model.dof_damping[dof] = nominal.dof_damping[dof] + values.joint_damping
    model.dof_armature[dof] = nominal.dof_armature[dof] + values.joint_armature
    model.body_mass[links] = nominal.body_mass[links] * values.link_mass_scale
    model.body_inertia[links] = nominal.body_inertia[links] * values.link_mass_scale[:, None]
    model.body_ipos[links] = nominal.body_ipos[links] + values.com_offset
    pb = sim_index.payload_body
    mass = max(values.payload_mass, PAYLOAD_MIN_MASS)
    model.body_mass[pb] = mass
    model.body_inertia[pb] = mass * (2 * 0.03**2) / 3.0  # solid 6 cm cube


def randomize(model: mujoco.MjModel, nominal: mujoco.MjModel, sim_index: Any, rng: np.random.Generator,
              ranges: RandomizationRanges) -> Draw:
    """Draw from ``ranges`` with ``rng`` and apply the dynamics part to ``model``."""
    values = draw(rng, ranges, len(sim_index.dof_adr))
    apply_dynamics(model, nominal, sim_index, values)
    return values
