"""Scripted puck pusher (ROS-free): the push task's classical baseline and fallback controller.

It works in the table plane on what a controller has (the tool tip from FK of the measured
joints, the *tracked* puck position, the goal) and returns the same action a push policy
does: a tip displacement, normalised by the task's ``action_scale``. Its joint targets come
from the same :func:`~simreal_ros.robot.planar.planar_target`, so it runs through the shield
like any controller and can stand in for a policy in shadow/fallback.

Strategy: go to the approach point behind the puck on the puck->goal line (around the puck
when the tool is on the wrong side), push along the line until the puck's centre is at the
goal, re-approach when the puck drifts off the line. Which of these it does follows from the
geometry of each call alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simreal_ros.settings import setting, validate_fields


@dataclass(frozen=True)
class PusherConfig:
    """The pusher's settings (declared once)."""

    approach_gap: float = setting(0.025, "gap between tool and puck at the approach point", unit="m", low=0.0,
                                  high=0.2)
    clearance: float = setting(0.035, "least gap kept when going around the puck", unit="m", low=0.0, high=0.2)
    align_tolerance: float = setting(0.012, "distance from the approach point at which pushing starts", unit="m",
                                     low=0.001, high=0.1)
    drift_tolerance: float = setting(0.015, "puck off the push line by more than this: re-approach", unit="m",
                                     low=0.001, high=0.1)
    push_speed: float = setting(0.6, "pushing step as a fraction of the largest action", low=0.05, high=1.0)
    slow_radius: float = setting(0.05, "within this distance of the goal the push slows down", unit="m",
                                 low=0.0, high=0.5)
    stop_radius: float = setting(0.01, "puck this close to the goal: stop", unit="m", low=0.0, high=0.1)

    def __post_init__(self) -> None:
        validate_fields(self)


class ScriptedPusher:
    """Args: action_scale (m per action of 1), puck_radius and tool_radius (m), config."""

    def __init__(self, action_scale: float, puck_radius: float, tool_radius: float,
                 config: PusherConfig | None = None) -> None:
        self.config = config or PusherConfig()
        self.scale = float(action_scale)
        self.contact = float(puck_radius) + float(tool_radius)
        self.phase = "approach"

    def reset(self) -> None:
        self.phase = "approach"

    def act(self, tool: np.ndarray, puck: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Action in [-1, 1]^2 from the tool tip, puck and goal positions (x, y; m).

        Stateless: the phase follows from the geometry alone (so the same inputs always give the
        same action, and the pusher can label states for imitation); :attr:`phase` reports it.
        """
        c = self.config
        tool, puck, goal = (np.asarray(v, dtype=float)[:2] for v in (tool, puck, goal))
        to_goal = goal - puck
        dist = float(np.linalg.norm(to_goal))
        if dist < c.stop_radius:
            self.phase = "done"
            return np.zeros(2)
        u = to_goal / dist
        behind = puck - u * (self.contact + c.approach_gap)
        rel = tool - puck
        along = float(rel @ u)
        off_line = abs(float(rel @ np.array([-u[1], u[0]])))
        aligned = (off_line < c.drift_tolerance and along < -0.5 * self.contact
                   and along > -(self.contact + c.approach_gap + c.align_tolerance))
        if not aligned:
            self.phase = "approach"
            return self._toward(tool, self._waypoint(tool, puck, u, behind), 1.0)
        self.phase = "push"  # move the tool so that the puck's centre ends at the goal
        speed = c.push_speed * min(1.0, max(0.2, dist / c.slow_radius)) if c.slow_radius > 0 else c.push_speed
        return self._toward(tool, goal - u * self.contact, speed, along_line=u)

    def _waypoint(self, tool, puck, u, behind) -> np.ndarray:
        """The approach point, or the next point on a circle around the puck (radius: contact +
        clearance) toward it when the straight way would touch the puck."""
        c = self.config
        keep = self.contact + c.clearance
        seg = behind - tool
        L = float(np.linalg.norm(seg))
        if L < 1e-9:
            return behind
        s = float(np.clip((puck - tool) @ seg / (L * L), 0.0, 1.0))
        if float(np.linalg.norm(tool + s * seg - puck)) >= self.contact + 0.5 * c.clearance:
            return behind
        rel = tool - puck
        a_now = float(np.arctan2(rel[1], rel[0]))
        a_goal = float(np.arctan2(-u[1], -u[0]))
        turn = (a_goal - a_now + np.pi) % (2 * np.pi) - np.pi
        a = a_now + float(np.clip(turn, -np.pi / 4, np.pi / 4))
        return puck + keep * np.array([np.cos(a), np.sin(a)])

    def _toward(self, tool, point, speed, along_line=None) -> np.ndarray:
        d = point - tool
        if along_line is not None:  # stay on the line: correct sideways error too, mostly go along it
            d = along_line * max(0.0, float(d @ along_line)) + (d - along_line * float(d @ along_line))
        n = float(np.linalg.norm(d))
        if n < 1e-9:
            return np.zeros(2)
        step = min(n, speed * self.scale)
        return np.clip(d / n * step / self.scale, -1.0, 1.0)
