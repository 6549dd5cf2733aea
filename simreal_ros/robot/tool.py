"""A tool on the flange, described as data beside the robot description (``urdf/<robot>_<tool>.yaml``).

Today there is one: the push task's pusher, a capsule along the flange's z axis. The loader is
strict like the rest of the description (every key once, numbers as numbers, positive sizes),
and every problem names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simreal_ros.resources import resource
from simreal_ros.robot.errors import RobotDescriptionError, as_number
from simreal_ros.robot.strict_yaml import load_section

SHAPES = ("capsule",)
KEYS = ("name", "parent_link", "shape", "radius", "length", "mass")


@dataclass(frozen=True)
class ToolSpec:
    """A capsule tool on ``parent_link`` pointing along its z axis.

    Attributes:
        name: tool name (MuJoCo body/geom names derive from it).
        parent_link: the link it is mounted on (the robot's flange link).
        radius: capsule radius (m). length: flange face to the tip (m), including the end cap.
        mass: kg (gravity compensated: a configured end-effector load).
        source: the file it was read from.
    """

    name: str
    parent_link: str
    radius: float
    length: float
    mass: float
    shape: str = "capsule"
    source: str = ""

    @property
    def tip_offset(self) -> np.ndarray:
        """Tip of the tool in the flange frame (m)."""
        return np.array([0.0, 0.0, self.length])

    @property
    def tip_center_offset(self) -> np.ndarray:
        """Centre of the lower cap's sphere in the flange frame: the point whose distance to a
        surface, minus ``radius``, is the clearance."""
        return np.array([0.0, 0.0, self.length - self.radius])


def load_tool(path: str | Path | None = None, flange_link: str | None = None) -> ToolSpec:
    """Read a tool file (default: the package's ``urdf/panda_pusher.yaml``).

    Raises:
        RobotDescriptionError: missing/malformed file, unknown or missing key, a non-positive
            size, a shape other than :data:`SHAPES`, or a parent link other than ``flange_link``.
    """
    path = Path(path) if path is not None else resource("urdf", "panda_pusher.yaml")
    data = load_section(path, "tool", "tool description")
    unknown = sorted(set(data) - set(KEYS))
    missing = [k for k in KEYS if k not in data]
    if unknown or missing:
        raise RobotDescriptionError(f"{path}: tool: unknown keys {unknown}, missing keys {missing} "
                                    f"(a tool has {list(KEYS)})")
    for key in ("name", "parent_link", "shape"):
        if not isinstance(data[key], str) or not data[key]:
            raise RobotDescriptionError(f"{path}: tool.{key} must be a non-empty string, got {data[key]!r}")
    if data["shape"] not in SHAPES:
        raise RobotDescriptionError(f"{path}: tool.shape {data['shape']!r} is not one of {list(SHAPES)}")
    if flange_link is not None and data["parent_link"] != flange_link:
        raise RobotDescriptionError(f"{path}: tool.parent_link {data['parent_link']!r} is not the robot's flange "
                                    f"link {flange_link!r}")
    values = {}
    for key in ("radius", "length", "mass"):
        v = as_number(data[key], f"{path}: tool.{key}")
        if not v > 0:
            raise RobotDescriptionError(f"{path}: tool.{key} must be > 0, got {v}")
        values[key] = v
    if values["length"] < 2 * values["radius"]:
        raise RobotDescriptionError(f"{path}: tool.length {values['length']} must be at least the capsule's "
                                    f"diameter {2 * values['radius']}")
    return ToolSpec(name=data["name"], parent_link=data["parent_link"], shape=data["shape"], source=str(path),
                    **values)
