"""The manufacturer's published joint limits: the ceiling for every limit of the shipped robot.

``urdf/<robot>_published_limits.yaml`` holds the datasheet table (for the Panda: Franka's
"Robot and interface specifications", joint-space limits). The loader reads it and refuses a
URDF or ``joint_limits`` YAML value that is looser: a lower position bound below the published
minimum, an upper bound above the published maximum, or a rate limit (velocity, acceleration,
jerk, effort, effort rate) above the published one. Config may tighten limits, never loosen
them beyond what the manufacturer allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from simreal_ros.robot.errors import RobotDescriptionError, as_number
from simreal_ros.robot.strict_yaml import load_yaml, yaml_error_text

#: keys of a joint's entry, in the ros2_control joint_limits naming (max_effort_rate: simreal_ros's
#: torque-rate extension); every rate limit is an upper bound on a magnitude.
PUBLISHED_KEYS = ("min_position", "max_position", "max_velocity", "max_acceleration", "max_jerk", "max_effort",
                  "max_effort_rate")


@dataclass(frozen=True)
class PublishedLimits:
    """The published limits per joint: ``values[joint][key]`` with the keys of :data:`PUBLISHED_KEYS`."""

    path: Path
    robot: str
    values: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def check(self, joint: str, key: str, value: float, where: str) -> None:
        """Raise unless ``value`` for ``joint``/``key`` is at least as tight as the published one.

        ``where`` names the file and element the value came from; the message adds both values.
        """
        ceiling = self.values[joint][key]
        looser = value < ceiling if key == "min_position" else value > ceiling
        if looser:
            side = "below the published minimum" if key == "min_position" else "above the published limit"
            raise RobotDescriptionError(
                f"{where}: {key} = {value!r} is {side} {ceiling!r} of joint '{joint}' ({self.path}); "
                "the manufacturer's limits are the ceiling: config may only tighten them")


def load_published_limits(path: str | Path, joint_names: Sequence[str], robot: str) -> PublishedLimits:
    """Read and check the published-limits file for ``robot`` with exactly ``joint_names``.

    Raises:
        RobotDescriptionError: missing file, malformed YAML, a duplicate key, another robot's
            table, a missing/unknown joint or key, a value that is not a number, a rate limit
            <= 0, or min_position >= max_position; the message names the file, joint and key.
    """
    path = Path(path)
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise RobotDescriptionError(f"{path}: published limits file not found (the ceiling for robot "
                                    f"'{robot}'s limits)") from None
    except yaml.YAMLError as exc:
        raise RobotDescriptionError(f"{path}: malformed YAML: {yaml_error_text(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("joints"), dict):
        raise RobotDescriptionError(f"{path}: needs a top-level 'joints' mapping")
    if data.get("robot") != robot:
        raise RobotDescriptionError(f"{path}: the published limits are for robot {data.get('robot')!r}, "
                                    f"the URDF describes {robot!r}")
    joints = data["joints"]
    missing = [j for j in joint_names if j not in joints]
    unknown = [j for j in joints if j not in joint_names]
    if missing or unknown:
        raise RobotDescriptionError(f"{path}: joints do not match the URDF's actuated joints (missing: {missing}, "
                                    f"unknown: {unknown})")
    values: dict[str, dict[str, float]] = {}
    for jn in joint_names:
        entry = joints[jn]
        if not isinstance(entry, dict) or set(entry) != set(PUBLISHED_KEYS):
            got = sorted(entry) if isinstance(entry, dict) else entry
            raise RobotDescriptionError(f"{path}: joints/{jn}: needs exactly the keys {list(PUBLISHED_KEYS)}, "
                                        f"got {got!r}")
        vals = {k: as_number(entry[k], f"{path}: joints/{jn}/{k}") for k in PUBLISHED_KEYS}
        for k in PUBLISHED_KEYS[2:]:
            if vals[k] <= 0:
                raise RobotDescriptionError(f"{path}: joints/{jn}/{k} must be > 0, got {vals[k]!r}")
        if vals["min_position"] >= vals["max_position"]:
            raise RobotDescriptionError(f"{path}: joints/{jn}: min_position {vals['min_position']!r} must be below "
                                        f"max_position {vals['max_position']!r}")
        values[jn] = vals
    return PublishedLimits(path=path, robot=robot, values=values)
