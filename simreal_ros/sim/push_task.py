"""The push task's scene and rules, declared once (``config/push_task.yaml`` shows the defaults).

A puck (cylinder) lies on the table; the pusher tool (``urdf/panda_pusher.yaml``) on the flange
pushes it, moving in the table plane at a fixed height; success is the puck's centre within
``success_radius`` of the goal and nearly still before the episode ends (Wagenmaker et al.,
NeurIPS 2024, the task where directly transferred policies failed 0/6 on a real Franka).

Geometry is in the robot's base frame (m). The table itself is part of the arm's scene
(:data:`simreal_ros.robot.mujoco_model.TABLE_TOP`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simreal_ros.resources import resource
from simreal_ros.robot.errors import RobotDescriptionError
from simreal_ros.robot.strict_yaml import load_section
from simreal_ros.settings import SettingError, from_settings, setting, validate_fields


def _box(v) -> str | None:
    return None if v[0] < v[2] and v[1] < v[3] else "must be [xmin, ymin, xmax, ymax] with min < max"


@dataclass(frozen=True)
class PushTaskConfig:
    """The push task (each field's bounds and meaning declared once)."""

    puck_radius: float = setting(0.04, "puck radius", unit="m", low=0.01, high=0.15)
    puck_height: float = setting(0.03, "puck height", unit="m", low=0.005, high=0.1)
    puck_mass: float = setting(0.2, "puck mass", unit="kg", low=0.01, high=5.0)
    table_friction: float = setting(0.25, "sliding friction coefficient between puck and table", low=0.0,
                                    low_open=True, high=2.0)
    tool_friction: float = setting(0.3, "sliding friction coefficient between tool and puck", low=0.0,
                                   low_open=True, high=2.0)
    push_height: float = setting(0.012, "height of the tool tip above the table top while pushing", unit="m",
                                 low=0.0, low_open=True, high=0.1)
    tool_start: tuple[float, ...] = setting([0.36, 0.0], "tool position (x, y) in the table plane at reset",
                                            unit="m", length=2, low=-1.0, high=1.0)
    puck_start_box: tuple[float, ...] = setting([0.46, -0.10, 0.54, 0.10], "puck start region [xmin, ymin, xmax, "
                                                "ymax]", unit="m", length=4, low=-1.0, high=1.0, check=_box)
    goal_box: tuple[float, ...] = setting([0.50, -0.20, 0.66, 0.20], "goal region [xmin, ymin, xmax, ymax]",
                                          unit="m", length=4, low=-1.0, high=1.0, check=_box)
    min_goal_distance: float = setting(0.08, "least distance between the puck's start and the goal", unit="m",
                                       low=0.0, high=0.5)
    workspace: tuple[float, ...] = setting([0.32, -0.28, 0.70, 0.28], "region the tool may move in [xmin, ymin, "
                                           "xmax, ymax]", unit="m", length=4, low=-1.0, high=1.0, check=_box)
    success_radius: float = setting(0.03, "puck centre within this distance of the goal is success", unit="m",
                                    low=0.0, low_open=True, high=0.2)
    success_speed: float = setting(0.02, "and the puck slower than this", unit="m/s", low=0.0, low_open=True,
                                   high=1.0)
    control_rate_hz: float = setting(10.0, "policy rate", unit="Hz", low=1.0, high=100.0)
    episode_seconds: float = setting(12.0, "episode length", unit="s", low=0.5, high=120.0)
    action_scale: float = setting(0.02, "tool displacement in the table plane for an action of 1", unit="m",
                                  low=0.0, low_open=True, high=0.1)
    max_lead: float = setting(0.03, "most the tool's reference point may be ahead of the measured tool",
                              unit="m", low=0.001, high=0.2)
    action_max_change: float = setting(0.4, "declared action filter: most the normalized action may change from one "
                                       "cycle to the next (manifest action.max_change)", low=0.0, low_open=True,
                                       high=2.0)
    tracker_rate_hz: float = setting(50.0, "object tracker rate", unit="Hz", low=1.0, high=1000.0)
    continue_probability: float = setting(0.5, "training: share of episodes that start where the last one ended "
                                          "(tool and puck as they are, a new goal), as the graph's sequential goals "
                                          "do", low=0.0, high=1.0)

    def __post_init__(self) -> None:
        validate_fields(self)


def load_push_task(path: str | Path | None = None) -> PushTaskConfig:
    """The task from ``path`` (default: the package's ``config/push_task.yaml``, key ``push_task``).

    Raises:
        RobotDescriptionError: a missing/malformed file, an unknown key or a value outside its
            declared bounds (the message names the file and the key).
    """
    path = Path(path) if path is not None else resource("config", "push_task.yaml")
    data = load_section(path, "push_task", "push task file")
    known = {f for f in PushTaskConfig.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RobotDescriptionError(f"{path}: push_task: unknown keys {unknown}")
    try:
        return from_settings(PushTaskConfig, data, str(path))
    except SettingError as exc:
        raise RobotDescriptionError(str(exc)) from None
