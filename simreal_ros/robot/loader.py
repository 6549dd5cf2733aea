"""Load the robot description: URDF + SRDF + joint_limits YAML + impedance gains -> :class:`RobotModel`.

One source of truth: joint names, origins, axes and position/velocity/effort limits come
from the URDF; acceleration, jerk and torque-rate limits from the ros2_control-style
``joint_limits`` YAML; the joint order and the ready pose from the SRDF; the controller's
impedance gains from ``config/<robot>_impedance.yaml``. The manufacturer's published limits
(``urdf/<robot>_published_limits.yaml``) are the ceiling for all of them: a looser,
non-numeric or duplicated value refuses to load, naming the file, the joint, the key and
both values.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from transforms3d.euler import euler2mat

from simreal_ros.resources import resource
from simreal_ros.robot.errors import RobotDescriptionError
from simreal_ros.robot.gains import load_gains
from simreal_ros.robot.model import Joint, JointLimits, RobotModel, _apply_overrides, _ro, override_value
from simreal_ros.robot.published import PublishedLimits, load_published_limits
from simreal_ros.robot.strict_yaml import load_section

#: URDF <limit> attribute -> joint_limits key of the same limit (the published table's names)
_URDF_LIMIT_KEYS = {"lower": "min_position", "upper": "max_position", "velocity": "max_velocity",
                    "effort": "max_effort"}
#: limit kinds that only the joint_limits YAML gives (URDF cannot hold them)
_YAML_ONLY_KEYS = ("max_acceleration", "max_jerk", "max_effort_rate")


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except FileNotFoundError:
        raise RobotDescriptionError(f"{path}: file not found") from None
    except ET.ParseError as exc:
        raise RobotDescriptionError(f"{path}: malformed XML: {exc}") from None


def _floats(path: Path, elem: ET.Element, attr: str, n: int, default: str | None = None,
            where: str | None = None) -> np.ndarray:
    text = elem.get(attr, default)
    where = where or f"{path}: <{elem.tag} name='{elem.get('name', '')}'> attribute '{attr}'"
    if text is None:
        raise RobotDescriptionError(f"{where} is missing")
    try:
        vals = [float(x) for x in text.split()]
    except ValueError:
        raise RobotDescriptionError(f"{where}: not numbers: {text!r}") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise RobotDescriptionError(f"{where}: expected {n} finite numbers, got {text!r}")
    return np.array(vals)


def _origin(path: Path, joint: ET.Element) -> np.ndarray:
    T = np.eye(4)
    org = joint.find("origin")
    if org is not None:
        T[:3, 3] = _floats(path, org, "xyz", 3, "0 0 0")
        r, p, y = _floats(path, org, "rpy", 3, "0 0 0")
        T[:3, :3] = euler2mat(r, p, y, "sxyz")  # URDF rpy: fixed-axis X, then Y, then Z
    return T


def _child(path: Path, joint: ET.Element, tag: str) -> ET.Element:
    el = joint.find(tag)
    if el is None:
        raise RobotDescriptionError(f"{path}: <joint name='{joint.get('name')}'> has no <{tag}> element")
    return el


def _unique(path: Path, root: ET.Element, tag: str) -> None:
    """Refuse two <tag> elements with one name (a later one would silently replace the first)."""
    seen: set[str] = set()
    for el in root.findall(tag):
        name = el.get("name")
        if not name:
            raise RobotDescriptionError(f"{path}: a <{tag}> element has no name")
        if name in seen:
            raise RobotDescriptionError(f"{path}: duplicate <{tag} name='{name}'>: every {tag} may be defined once")
        seen.add(name)


def _urdf_limits(path: Path, joint: ET.Element) -> tuple[dict[str, float], dict[str, str]]:
    """The <limit> of an actuated joint as ``{joint_limits key: value}``, each value checked, and
    ``{key: where}`` naming the file, joint and attribute as written."""
    jn = joint.get("name")
    lim = _child(path, joint, "limit")
    out, wheres = {}, {}
    for attr, key in _URDF_LIMIT_KEYS.items():
        where = f"{path}: <joint name='{jn}'> <limit {attr}='{lim.get(attr, '')}'>"
        v = float(_floats(path, lim, attr, 1, where=where)[0])
        if key not in ("min_position", "max_position") and v <= 0:
            raise RobotDescriptionError(f"{where}: {attr} must be > 0")
        out[key], wheres[key] = v, where
    if not out["min_position"] < out["max_position"]:
        raise RobotDescriptionError(f"{path}: <joint name='{jn}'> <limit lower='{lim.get('lower')}' "
                                    f"upper='{lim.get('upper')}'>: lower must be below upper")
    return out, wheres


def _read_joint_limits(path: Path, names: list[str], published: PublishedLimits) -> dict:
    """The ``joint_limits`` mapping of ``path``: every value a number within the published ceiling."""
    jl = load_section(path, "joint_limits", "file")
    for jn, entry in jl.items():
        if jn not in names:
            raise RobotDescriptionError(f"{path}: unknown joint '{jn}' (robot joints: {names})")
        if not isinstance(entry, dict):
            raise RobotDescriptionError(f"{path}: joint_limits/{jn}: expected a mapping of limits, got {entry!r}")
        for key, value in entry.items():
            v = override_value(f"{path}: joint '{jn}'", key, value)
            if v is not None:
                published.check(jn, key, v, f"{path}: joint_limits/{jn}")
    for jn in names:
        for key in _YAML_ONLY_KEYS:
            if key not in jl.get(jn, {}):
                raise RobotDescriptionError(f"{path}: joint_limits/{jn}/{key} is missing")
    return jl


def load_robot(
    name: str = "panda",
    urdf: str | Path | None = None,
    srdf: str | Path | None = None,
    joint_limits: str | Path | None = None,
    impedance: str | Path | None = None,
    published_limits: str | Path | None = None,
) -> RobotModel:
    """Load a robot from ``urdf/<name>.urdf``, ``urdf/<name>.srdf``, ``config/<name>_joint_limits.yaml``,
    ``config/<name>_impedance.yaml`` and ``urdf/<name>_published_limits.yaml`` (or the paths given).

    Raises:
        RobotDescriptionError: a file is missing or malformed, a limit is looser than the
            published one, not a number or given twice, or the gains do not fit the limits;
            the message names the file and the element or key.
    """
    urdf = Path(urdf) if urdf else resource("urdf", f"{name}.urdf")
    srdf = Path(srdf) if srdf else resource("urdf", f"{name}.srdf")
    joint_limits = Path(joint_limits) if joint_limits else resource("config", f"{name}_joint_limits.yaml")
    impedance = Path(impedance) if impedance else resource("config", f"{name}_impedance.yaml")
    published_limits = (Path(published_limits) if published_limits
                        else resource("urdf", f"{name}_published_limits.yaml"))

    root = _parse_xml(urdf)
    if root.tag != "robot":
        raise RobotDescriptionError(f"{urdf}: root element is <{root.tag}>, expected <robot>")
    _unique(urdf, root, "link")
    _unique(urdf, root, "joint")
    sroot = _parse_xml(srdf)
    chain = sroot.find("group/chain")
    if chain is None or not chain.get("base_link") or not chain.get("tip_link"):
        raise RobotDescriptionError(f"{srdf}: needs <group><chain base_link=... tip_link=...></group>")
    base, tip = chain.get("base_link"), chain.get("tip_link")

    by_child: dict[str, ET.Element] = {}
    for j in root.findall("joint"):
        child = _child(urdf, j, "child").get("link")
        if child in by_child:
            raise RobotDescriptionError(f"{urdf}: <joint name='{j.get('name')}'> and <joint name="
                                        f"'{by_child[child].get('name')}'> both lead to link '{child}'")
        by_child[child] = j
    # walk tip -> base
    walk: list[ET.Element] = []
    link = tip
    while link != base:
        if link not in by_child or len(walk) > len(by_child):
            raise RobotDescriptionError(f"{urdf}: no joint leads to link '{link}' on the chain {base} -> {tip}")
        j = by_child[link]
        walk.append(j)
        link = _child(urdf, j, "parent").get("link")
    walk.reverse()

    joints: list[Joint] = []
    urdf_limits: list[dict[str, float]] = []
    urdf_wheres: list[dict[str, str]] = []
    flange = np.eye(4)
    for j in walk:
        jtype = j.get("type")
        T = _origin(urdf, j)
        if jtype == "fixed":
            if joints:
                flange = flange @ T
                continue
            raise RobotDescriptionError(f"{urdf}: <joint name='{j.get('name')}'>: fixed joint before the first actuated joint")
        if jtype != "revolute":
            raise RobotDescriptionError(f"{urdf}: <joint name='{j.get('name')}'> type '{jtype}' is not supported (revolute/fixed)")
        if joints and not np.allclose(flange, np.eye(4)):
            raise RobotDescriptionError(f"{urdf}: fixed joints between actuated joints are not supported")
        axis_el = j.find("axis")
        axis = _floats(urdf, axis_el, "xyz", 3) if axis_el is not None else np.array([1.0, 0, 0])
        axis = axis / np.linalg.norm(axis)
        values, wheres = _urdf_limits(urdf, j)
        urdf_limits.append(values)
        urdf_wheres.append(wheres)
        joints.append(Joint(j.get("name"), _child(urdf, j, "parent").get("link"), _child(urdf, j, "child").get("link"), T, axis))
    names = [j.name for j in joints]
    n = len(joints)

    robot_name = root.get("name", name)
    published = load_published_limits(published_limits, names, robot_name)
    for jn, values, wheres in zip(names, urdf_limits, urdf_wheres):
        for key, v in values.items():
            published.check(jn, key, v, wheres[key])

    jl = _read_joint_limits(joint_limits, names, published)
    # acceleration/jerk/effort_rate start unbounded and are set from the YAML (any value is
    # "tighter" than inf, and checked against the published ceiling above); position/velocity/
    # effort from the URDF may only be tightened.
    unset = JointLimits.__new__(JointLimits)
    columns = {"position_min": "min_position", "position_max": "max_position", "velocity": "max_velocity",
               "effort": "max_effort"}
    for k, key in columns.items():
        object.__setattr__(unset, k, np.array([lim[key] for lim in urdf_limits], dtype=float))
    for k in ("acceleration", "jerk", "effort_rate"):
        object.__setattr__(unset, k, np.full(n, math.inf))
    limits = _apply_overrides(unset, names, jl, str(joint_limits))

    gains = load_gains(impedance, names, limits.velocity, limits.effort)

    ready = np.zeros(n)
    state = next((s for s in sroot.findall("group_state") if s.get("name") == "ready"), None)
    if state is None:
        raise RobotDescriptionError(f"{srdf}: no <group_state name='ready'>")
    seen = set()
    for js in state.findall("joint"):
        jn = js.get("name")
        if jn not in names:
            raise RobotDescriptionError(f"{srdf}: <group_state name='ready'> names unknown joint '{jn}'")
        if jn in seen:
            raise RobotDescriptionError(f"{srdf}: <group_state name='ready'> names joint '{jn}' twice")
        ready[names.index(jn)] = _floats(srdf, js, "value", 1)[0]
        seen.add(jn)
    if seen != set(names):
        raise RobotDescriptionError(f"{srdf}: <group_state name='ready'> lacks joints {sorted(set(names) - seen)}")
    if np.any(ready < limits.position_min) or np.any(ready > limits.position_max):
        raise RobotDescriptionError(f"{srdf}: ready pose is outside the position limits")

    return RobotModel(
        name=robot_name,
        joints=tuple(joints),
        limits=limits,
        gains=gains,
        ready_pose=_ro(ready),
        base_link=base,
        flange_link=tip,
        flange_offset=flange,
        source={"urdf": str(urdf), "srdf": str(srdf), "joint_limits": str(joint_limits),
                "impedance": str(impedance), "published_limits": str(published_limits)},
    )
