"""Domain randomization: a pure function of (nominal model, rng, ranges).

Every draw is uniform in the configured ``[low, high]`` interval (written next to each draw
below) and comes from the generator passed in, so a seed reproduces the draw exactly.
Ranges live in ``config/randomization.yaml``; see :func:`load_ranges`, which also takes the
path of a calibration (``simreal calibrate fit ... --out DIR`` writes ``DIR/calibration.yaml``, whose
``randomization`` section is a profile centred on the identified values).

Besides the one-interval-for-every-joint form, a calibrated profile uses:

* per-joint intervals: a list of one ``[low, high]`` per joint (robot order) for the per-joint
  knobs (``joint_friction``, ``joint_damping``, ``joint_armature``, ``link_mass_scale``,
  ``stiffness_scale``, ``damping_scale``, ``position_bias``). For ``position_bias`` the per-joint
  form is *signed* (``[-0.0012, -0.0008]`` is a negative bias), where the single interval is a
  magnitude with a random sign;
* ``payload_com``: per axis signed ``[low, high]`` (m): offset of the payload's centre of mass
  from the nominal one (three intervals);
* ``link_inertia``: ``{link: {mass, com, inertia}}`` (kg; m; kg m^2 about the centre of mass,
  ``ixx iyy izz ixy ixz iyz``) replacing the URDF's inertial of that link before the
  ``link_mass_scale``/``com_offset`` draws.
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


#: Keys whose single interval is a magnitude drawn with a random sign (their per-joint form is signed).
RANDOM_SIGN = ("com_offset", "position_bias")
#: Keys that accept one interval per joint.
PER_JOINT = ("joint_friction", "joint_damping", "joint_armature", "link_mass_scale", "stiffness_scale",
             "damping_scale", "position_bias")


def _intervals(where: str, key: str, value: Any) -> tuple:
    """``[low, high]``, or for per-joint keys a list of them (signed for ``position_bias``)."""
    if key == "payload_com" or (key in PER_JOINT and isinstance(value, (list, tuple)) and value
                                and isinstance(value[0], (list, tuple))):
        if key == "payload_com" and (not isinstance(value, (list, tuple)) or len(value) != 3):
            raise ValueError(f"{where}: expected three [low, high] intervals (x, y, z), got {value!r}")
        low = -np.inf if key in ("position_bias", "payload_com") else 0.0
        return tuple(_interval(f"{where}[{i}]", v, low) for i, v in enumerate(value))
    return _interval(where, value, -np.inf if key in _SIGNED else 0.0)


@dataclass(frozen=True)
class LinkInertia:
    """A link's inertial replacing the URDF's (what a calibration identified)."""

    link: str
    mass: float  # kg
    com: tuple[float, float, float]  # m, link frame
    inertia: tuple[float, float, float, float, float, float]  # kg m^2 about the com: ixx iyy izz ixy ixz iyz

    def principal(self) -> tuple[np.ndarray, np.ndarray]:
        """(principal moments, quaternion of the principal axes) as MuJoCo stores them."""
        ixx, iyy, izz, ixy, ixz, iyz = self.inertia
        full = np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]])
        moments, axes = np.linalg.eigh(full)
        if np.linalg.det(axes) < 0:
            axes[:, 0] = -axes[:, 0]
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, axes.ravel())
        return moments, quat

    @classmethod
    def from_dict(cls, link: str, data: Any, where: str) -> LinkInertia:
        try:
            mass = float(data["mass"])
            com = tuple(float(v) for v in data["com"])
            inertia = tuple(float(v) for v in data["inertia"])
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{where}.{link}: expected {{mass, com: [x, y, z], inertia: "
                             f"[ixx, iyy, izz, ixy, ixz, iyz]}}, got {data!r}") from None
        if len(com) != 3 or len(inertia) != 6 or not np.all(np.isfinite([mass, *com, *inertia])) or mass <= 0:
            raise ValueError(f"{where}.{link}: mass > 0, 3 com and 6 inertia values, all finite; got {data!r}")
        li = cls(link, mass, com, inertia)
        moments = li.principal()[0]
        if moments.min() <= 0 or moments[0] + moments[1] < moments[2] * (1 - 1e-9):
            raise ValueError(f"{where}.{link}: inertia {list(inertia)} is not physical (principal moments "
                             f"{moments.tolist()})")
        return li


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
    payload_com: tuple = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))  # m per axis, signed, from the nominal com
    link_inertia: tuple[LinkInertia, ...] = ()  # replaces the URDF's inertial of these links


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
            vals = {}
            for k, v in entries.items():
                if k == "link_inertia":
                    if not isinstance(v, Mapping):
                        raise ValueError(f"{where}.{section}.link_inertia: expected a mapping link -> inertial")
                    vals[k] = tuple(LinkInertia.from_dict(str(link), d, f"{where}.{section}.link_inertia")
                                    for link, d in v.items())
                else:
                    vals[k] = _intervals(f"{where}.{section}.{k}", k, v)
            parts[section] = klass(**vals)
        return cls(**parts)


def is_profile_file(profile: str) -> bool:
    """``profile`` names a file (a calibration) rather than a profile of the ranges file."""
    return profile.endswith((".yaml", ".yml")) or "/" in profile


def load_ranges(path: str | Path | None = None, profile: str = "default") -> RandomizationRanges:
    """Load a named profile (``nominal``, ``default``, ``wide``) from the ranges file, or, when
    ``profile`` is the path of a calibration (``.../calibration.yaml``), its ``randomization``."""
    if is_profile_file(profile):
        file = Path(profile)
        try:
            data = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"randomization profile file {file}: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("randomization"), Mapping):
            raise ValueError(f"{file}: not a calibration (no 'randomization' section with 'dynamics'/'sensor')")
        return RandomizationRanges.from_dict(data["randomization"], f"{file}: randomization")
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
    payload_com: np.ndarray = field(default_factory=lambda: np.zeros(3))
    link_inertia: tuple[LinkInertia, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self) if f.name != "link_inertia"}
        out["link_inertia"] = {li.link: {"mass": li.mass, "com": list(li.com), "inertia": list(li.inertia)}
                               for li in self.link_inertia}
        return out


def _payload_com(rng: np.random.Generator, intervals) -> np.ndarray:
    """U[low, high] per axis; no draw at all for the zero intervals of every shipped profile, so
    the generator's stream (the sim's noise and drops come next) is what it was before calibrated
    profiles added this knob."""
    lo, hi = np.array([iv[0] for iv in intervals]), np.array([iv[1] for iv in intervals])
    return rng.uniform(lo, hi) if np.any(hi > lo) else lo.copy()


def draw(rng: np.random.Generator, ranges: RandomizationRanges, n_joints: int) -> Draw:
    """Draw one set of values. Pure: depends only on ``rng``'s state and ``ranges``."""
    d, s = ranges.dynamics, ranges.sensor

    def per(iv: Any) -> np.ndarray | None:
        a = np.asarray(iv, float)
        if a.ndim != 2:
            return None
        if a.shape[0] != n_joints:
            raise ValueError(f"randomization: {a.shape[0]} per-joint intervals for {n_joints} joints")
        return a

    def u(iv: Any, size: Any = None) -> Any:
        a = per(iv)
        if a is not None:  # one interval per joint
            return rng.uniform(a[:, 0], a[:, 1])
        return rng.uniform(iv[0], iv[1], size)  # uniform in [low, high]

    def signed(iv: Any, size: Any) -> np.ndarray:
        if per(iv) is not None:  # per joint: signed intervals
            return u(iv)
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
        payload_com=_payload_com(rng, d.payload_com),
        link_inertia=d.link_inertia,
    )


#: Half edge of the payload, modelled as a solid cube on the flange (m).
PAYLOAD_HALF_SIZE = 0.03


def payload_inertia(mass: float) -> float:
    """Principal inertia of the payload cube of ``mass`` (kg m^2, the same about every axis)."""
    return mass * (2 * PAYLOAD_HALF_SIZE**2) / 3.0


def apply_dynamics(model: mujoco.MjModel, nominal: mujoco.MjModel, sim_index: Any, values: Draw) -> None:
    """Write a draw's dynamics into ``model``, starting from ``nominal`` (never compounding)."""
    dof, links = sim_index.dof_adr, sim_index.link_bodies
    model.dof_frictionloss[dof] = nominal.dof_frictionloss[dof] + values.joint_friction
    model.dof_damping[dof] = nominal.dof_damping[dof] + values.joint_damping
    model.dof_armature[dof] = nominal.dof_armature[dof] + values.joint_armature
    mass, inertia = nominal.body_mass[links].copy(), nominal.body_inertia[links].copy()
    ipos, iquat = nominal.body_ipos[links].copy(), nominal.body_iquat[links].copy()
    for li in values.link_inertia:
        bid = mujoco.mj_name2id(nominal, mujoco.mjtObj.mjOBJ_BODY, li.link)
        hit = np.flatnonzero(np.asarray(links) == bid)
        if not len(hit):
            raise ValueError(f"randomization: link_inertia names '{li.link}', not a moving link of the arm")
        i = int(hit[0])
        mass[i], ipos[i] = li.mass, li.com
        inertia[i], iquat[i] = li.principal()
    model.body_mass[links] = mass * values.link_mass_scale
    model.body_inertia[links] = inertia * values.link_mass_scale[:, None]
    model.body_ipos[links] = ipos + values.com_offset
    model.body_iquat[links] = iquat
    pb = sim_index.payload_body
    model.body_ipos[pb] = nominal.body_ipos[pb] + values.payload_com
    mass = max(values.payload_mass, PAYLOAD_MIN_MASS)
    model.body_mass[pb] = mass
    model.body_inertia[pb] = payload_inertia(mass)


def randomize(model: mujoco.MjModel, nominal: mujoco.MjModel, sim_index: Any, rng: np.random.Generator,
              ranges: RandomizationRanges) -> Draw:
    """Draw from ``ranges`` with ``rng`` and apply the dynamics part to ``model``."""
    values = draw(rng, ranges, len(sim_index.dof_adr))
    apply_dynamics(model, nominal, sim_index, values)
    return values
