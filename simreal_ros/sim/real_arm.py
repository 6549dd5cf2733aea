"""A hidden "real" arm for the simulator: exact dynamics and sensor values from a YAML file.

Calibration tests and benchmarks need an arm whose parameters the fitter does not know and
that lie outside every randomization profile (3x friction, a 1.5 kg payload, 10 ms action
latency, a biased encoder, the published identified link inertias instead of the URDF's).
The sim bridge (``real_arm`` parameter, :class:`~simreal_ros.sim.driver.DriverConfig`) and
:class:`~simreal_ros.sim.arm.ArmSim` apply such a file at every reset in place of a
randomization draw. The fitter only ever sees the recorded bag.

File format (values, not ranges; every key optional, a missing one keeps the robot
description's value; unknown keys and sections are refused)::

    arm:                          # the arm (issue 11)
      joint_friction: 1.5         # Coulomb friction (frictionloss), N m: one value or one per joint
      joint_damping: [0.3, ...]   # viscous damping, N m s/rad
      joint_armature: 0.02        # reflected rotor inertia, kg m^2
      stiffness_scale: 1.0        # x the impedance gains of the robot description
      damping_scale: 1.0
      link_mass_scale: 1.0        # x the URDF's link masses and inertias (links not under 'links')
      payload_mass: 1.5           # kg on the flange, not gravity compensated
      payload_com: [0, 0, 0.02]   # m, its centre of mass in the payload frame (3 cm above the flange)
      position_bias: [0.002, ...] # rad, signed: measured - true
      position_noise_std: 0.0     # rad; velocity_noise_std rad/s; effort_noise_std N m
      observation_latency: 0.0    # s
      action_latency: 0.01        # s
      drop_probability: 0.0       # per measurement
      links:                      # link name -> its inertial parameters (in the link frame)
        panda_link1: {mass: 4.970684, com: [0.003875, 0.002081, -0.04762],
                      inertia: [0.70337, 0.70661, 0.009117, -0.000139, 0.006772, 0.019169]}
                                  # about the com: ixx iyy izz ixy ixz iyz, kg m^2

    table:                        # the push task's table, puck and tracker (issue 12)
      table_friction: 0.05        # puck-table sliding friction coefficient
      puck_mass: 0.6              # kg; puck_radius, puck_height m
      table_height_offset: -0.004 # m, signed: the table top's height error
      tracker_noise_std: 0.002    # m; tracker_latency s; tracker_drop_probability per sample

At least one section. Each problem is one :class:`RealArmError` line naming the file and the key.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import mujoco
import numpy as np
import yaml

from simreal_ros.robot.strict_yaml import load_yaml, yaml_error_text
from simreal_ros.sim.randomize import Draw, LinkInertia, apply_dynamics

#: top-level sections: name -> what it holds
SECTIONS = {"arm": "the arm's dynamics and sensors", "table": "the push task's table, puck and object tracker"}
#: ``table`` keys -> (low, high); a missing key keeps the push task's value (drawn values otherwise)
TABLE_KEYS: dict[str, tuple[float, float | None]] = {
    "table_friction": (1e-4, 10.0), "puck_mass": (1e-3, 100.0), "puck_radius": (0.005, 0.3),
    "puck_height": (0.002, 0.2), "table_height_offset": (-0.1, 0.1), "tracker_noise_std": (0.0, 1.0),
    "tracker_latency": (0.0, 10.0), "tracker_drop_probability": (0.0, 0.99)}


class RealArmError(ValueError):
    """A hidden-arm file that cannot be used (the message names the file and the key)."""


@dataclass(frozen=True)
class LinkInertial:
    """A link's inertial parameters in its own frame: mass (kg), centre of mass (m) and the
    inertia tensor about it (kg m^2, ``ixx iyy izz ixy ixz iyz``)."""

    mass: float
    com: tuple[float, float, float]
    inertia: tuple[float, float, float, float, float, float]

    def principal(self) -> tuple[np.ndarray, np.ndarray]:
        """(principal moments, quaternion of the principal axes in the link frame): what MuJoCo
        stores in ``body_inertia`` / ``body_iquat`` (its compiler does the same for ``fullinertia``)."""
        return LinkInertia("", self.mass, self.com, self.inertia).principal()


@dataclass(frozen=True)
class RealArm:
    """A hidden arm: the exact :class:`~simreal_ros.sim.randomize.Draw` it applies at every
    reset, its payload's centre of mass and its link inertial overrides."""

    draw: Draw | None
    payload_com: tuple[float, float, float] = (0.0, 0.0, 0.0)
    links: Mapping[str, LinkInertial] = field(default_factory=dict)
    source: str = ""
    #: the push task's hidden table (``table`` section), ``None`` without one
    table: Mapping[str, float] | None = None

    @property
    def has_arm(self) -> bool:
        return self.draw is not None

    def nominal_model(self, nominal: mujoco.MjModel) -> mujoco.MjModel:
        """A copy of ``nominal`` with the link overrides: the model the draw starts from."""
        model = copy.copy(nominal)
        for name, link in self.links.items():
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            moments, quat = link.principal()
            model.body_mass[body] = link.mass
            model.body_ipos[body] = link.com
            model.body_inertia[body] = moments
            model.body_iquat[body] = quat
        return model

    def apply(self, model: mujoco.MjModel, nominal: mujoco.MjModel, sim_index: Any) -> Draw:
        """Write the hidden values into ``model`` from ``nominal`` (see :meth:`nominal_model`)."""
        apply_dynamics(model, nominal, sim_index, self.draw)
        model.body_ipos[sim_index.payload_body] = self.payload_com
        return self.draw


def _number(where: str, v: Any, low: float | None = 0.0, high: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RealArmError(f"{where} = {v!r}: not a finite number")
    if (low is not None and v < low) or (high is not None and v > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise RealArmError(f"{where} = {v!r}: outside [{lo}, {hi}]")
    return float(v)


def _vector(where: str, v: Any, size: int, low: float | None = 0.0, scalar: bool = True) -> np.ndarray:
    if scalar and not isinstance(v, (list, tuple)):
        return np.full(size, _number(where, v, low))
    if not isinstance(v, (list, tuple)) or len(v) != size:
        raise RealArmError(f"{where} = {v!r}: expected {'one number or ' if scalar else ''}{size} numbers")
    return np.array([_number(f"{where}[{i}]", x, low) for i, x in enumerate(v)])


def _links(where: str, data: Any, link_names: tuple[str, ...]) -> dict[str, LinkInertial]:
    if not isinstance(data, Mapping):
        raise RealArmError(f"{where}: expected a mapping of link name -> {{mass, com, inertia}}")
    out = {}
    for name, entry in data.items():
        w = f"{where}.{name}"
        if name not in link_names:
            raise RealArmError(f"{w}: not a moving link of the robot (links: {list(link_names)})")
        if not isinstance(entry, Mapping) or set(entry) != {"mass", "com", "inertia"}:
            got = sorted(entry) if isinstance(entry, Mapping) else entry
            raise RealArmError(f"{w}: needs exactly the keys ['com', 'inertia', 'mass'], got {got!r}")
        mass = _number(f"{w}.mass", entry["mass"], 1e-6)
        com = _vector(f"{w}.com", entry["com"], 3, low=None, scalar=False)
        inertia = _vector(f"{w}.inertia", entry["inertia"], 6, low=None, scalar=False)
        link = LinkInertial(mass, tuple(com), tuple(inertia))
        moments, _ = link.principal()
        a, b, c = sorted(moments)
        if a <= 0 or a + b < c * (1 - 1e-9):
            raise RealArmError(f"{w}.inertia = {list(inertia)}: not a physical inertia (principal moments "
                               f"{np.round(moments, 9).tolist()} must be positive and satisfy a + b >= c)")
        out[str(name)] = link
    return out


def _arm(where: str, data: Any, joint_names: tuple[str, ...], link_names: tuple[str, ...]) -> RealArm:
    n = len(joint_names)
    if not isinstance(data, Mapping):
        raise RealArmError(f"{where}: expected a mapping of arm values")
    per_joint: dict[str, tuple[float | None, float]] = {  # key -> (lower bound, nominal)
        "joint_friction": (0.0, 0.0), "joint_damping": (0.0, 0.0), "joint_armature": (0.0, 0.0),
        "stiffness_scale": (1e-3, 1.0), "damping_scale": (1e-3, 1.0), "link_mass_scale": (1e-3, 1.0),
        "position_bias": (None, 0.0)}
    scalars: dict[str, tuple[float, float | None]] = {  # key -> (low, high)
        "payload_mass": (0.0, 100.0), "position_noise_std": (0.0, None), "velocity_noise_std": (0.0, None),
        "effort_noise_std": (0.0, None), "observation_latency": (0.0, 10.0), "action_latency": (0.0, 10.0),
        "drop_probability": (0.0, 1.0)}
    allowed = {*per_joint, *scalars, "payload_com", "com_offset", "links"}
    unknown = set(data) - allowed
    if unknown:
        raise RealArmError(f"{where}: unknown key(s) {sorted(map(str, unknown))} (allowed: {sorted(allowed)})")
    values: dict[str, Any] = {k: np.full(n, nominal) for k, (_, nominal) in per_joint.items()}
    values.update({k: 0.0 for k in scalars})
    for key, (low, _) in per_joint.items():
        if key in data:
            values[key] = _vector(f"{where}.{key}", data[key], n, low)
    for key, (low, high) in scalars.items():
        if key in data:
            values[key] = _number(f"{where}.{key}", data[key], low, high)
    com_offset = np.zeros((n, 3))
    if "com_offset" in data:
        rows = data["com_offset"]
        if not isinstance(rows, (list, tuple)) or len(rows) != n:
            raise RealArmError(f"{where}.com_offset: expected {n} rows of 3 numbers (m), got {rows!r}")
        com_offset = np.array([_vector(f"{where}.com_offset[{i}]", r, 3, None, scalar=False)
                               for i, r in enumerate(rows)])
    payload_com = (_vector(f"{where}.payload_com", data["payload_com"], 3, None, scalar=False)
                   if "payload_com" in data else np.zeros(3))
    links = _links(f"{where}.links", data["links"], link_names) if "links" in data else {}
    draw = Draw(
        joint_friction=values["joint_friction"], joint_damping=values["joint_damping"],
        joint_armature=values["joint_armature"], link_mass_scale=values["link_mass_scale"], com_offset=com_offset,
        stiffness_scale=values["stiffness_scale"], damping_scale=values["damping_scale"],
        payload_mass=values["payload_mass"], position_noise_std=values["position_noise_std"],
        velocity_noise_std=values["velocity_noise_std"], effort_noise_std=values["effort_noise_std"],
        position_bias=values["position_bias"], observation_latency=values["observation_latency"],
        action_latency=values["action_latency"], drop_probability=values["drop_probability"])
    return RealArm(draw, tuple(payload_com), links)


def _table(where: str, data: Any) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise RealArmError(f"{where}: expected a mapping of table values")
    unknown = set(data) - set(TABLE_KEYS)
    if unknown:
        raise RealArmError(f"{where}: unknown key(s) {sorted(map(str, unknown))} (allowed: {sorted(TABLE_KEYS)})")
    return {k: _number(f"{where}.{k}", data[k], *TABLE_KEYS[k]) for k in data}


_PARSERS: dict[str, Callable[..., Any]] = {"arm": _arm}


def load_real_arm(path: str | Path, robot: Any) -> RealArm:
    """Read and validate a hidden-arm file for ``robot`` (see the module docstring).

    Raises:
        RealArmError: no such file, malformed YAML (duplicate keys too), an unknown section or
            key, a value of the wrong kind or range, a link the robot does not have, an
            unphysical inertia; the message names the file and the key.
    """
    path = Path(path)
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise RealArmError(f"{path}: no such hidden-arm file") from None
    except IsADirectoryError:
        raise RealArmError(f"{path}: is a directory, not a hidden-arm YAML file") from None
    except yaml.YAMLError as exc:
        raise RealArmError(f"{path}: malformed YAML: {yaml_error_text(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RealArmError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, Mapping) or not set(data) & set(SECTIONS):
        raise RealArmError(f"{path}: needs a top-level 'arm' and/or 'table' mapping (sections: {sorted(SECTIONS)})")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise RealArmError(f"{path}: unknown section(s) {sorted(map(str, unknown))} (known: {sorted(SECTIONS)})")
    links = tuple(j.child for j in robot.joints)
    table = _table(f"{path}: table", data["table"]) if "table" in data else None
    if "arm" not in data:
        return RealArm(None, source=str(path), table=table)
    arm = _PARSERS["arm"](f"{path}: arm", data["arm"], tuple(robot.joint_names), links)
    return RealArm(arm.draw, arm.payload_com, arm.links, str(path), table)
