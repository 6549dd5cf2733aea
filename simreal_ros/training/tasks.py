"""The tasks a policy can be trained and evaluated on, by name (``--task reach|push``).

One place says, per task, which Gymnasium env it is, which observation terms and action type a
bundle for it declares (so the executor on the robot builds exactly what the env built in
training), and which expert labels its states for the DAgger warm start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from simreal_ros.policy.action import limit_change

TASK_NAMES = ("reach", "push")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    env_id: str
    make_env: Callable[..., Any]  # (randomization=...) -> env
    obs_terms: tuple[str, ...]
    expert: Callable[[Any, np.ndarray], np.ndarray]  # (env, last action) -> action
    expert_info: dict[str, Any]

    def manifest_fields(self, env) -> dict[str, Any]:
        """Action type, scale, rate (and plane) of a bundle for this task, from a probe env."""
        if self.name == "push":
            return {"action_type": "tool_planar_delta", "action_scale": env.task.action_scale,
                    "control_rate_hz": env.task.control_rate_hz, "action_planar": env.action_planar,
                    "action_max_change": env.task.action_max_change}
        return {"action_type": "joint_position_delta", "action_scale": env.action_scale,
                "control_rate_hz": 1.0 / env.control_period, "action_max_change": env.action_max_change}


def push_expert(env, last_action: np.ndarray) -> np.ndarray:
    """The scripted pusher on what a controller observes (measured joints -> tool tip, tracked
    puck, goal), with the task's nominal puck size, rate-limited from the last action as the env's
    declared action filter limits the policy (smooth labels)."""
    from simreal_ros.baseline.pusher import ScriptedPusher

    pusher = getattr(env, "_expert_pusher", None)
    if pusher is None:
        pusher = ScriptedPusher(env.task.action_scale, env.task.puck_radius, env.tool.radius)
        env._expert_pusher = pusher
    tool = env.frame.tip_position(env.robot, env.measurement.position)
    a = pusher.act(tool, env.tracked.position, env.goal)
    return limit_change(a, last_action, env.task.action_max_change)


def task_of_manifest(manifest) -> str:
    """The task a bundle was made for: ``push`` for planar tool actions or a push-trained bundle."""
    env_id = ((manifest.provenance.get("training") or {}).get("env") or {}).get("id") \
        if isinstance(manifest.provenance.get("training"), dict) else None
    if manifest.action_type == "tool_planar_delta" or env_id == "SimReal/Push-v0":
        return "push"
    return "reach"


def task(name: str) -> TaskSpec:
    """The task called ``name`` (ValueError naming the known ones otherwise)."""
    if name == "reach":
        from simreal_ros.policy.observation import DEFAULT_TERMS
        from simreal_ros.sim.env import ReachEnv
        from simreal_ros.training.imitation import ExpertConfig, reach_expert

        return TaskSpec("reach", "SimReal/Reach-v0", ReachEnv, DEFAULT_TERMS, reach_expert,
                        {"kind": "resolved-rate DLS (simreal_ros.training.imitation)", **ExpertConfig().__dict__})
    if name == "push":
        from simreal_ros.baseline.pusher import PusherConfig
        from simreal_ros.sim.push_env import PUSH_TERMS, PushEnv
        from simreal_ros.sim.push_task import PushTaskConfig

        return TaskSpec("push", "SimReal/Push-v0", PushEnv, PUSH_TERMS, push_expert,
                        {"kind": "scripted pusher (simreal_ros.baseline.pusher)",
                         "max_action_change": PushTaskConfig().action_max_change, **PusherConfig().__dict__})
    raise ValueError(f"unknown task '{name}' (known: {', '.join(TASK_NAMES)})")
