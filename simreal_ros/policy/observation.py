"""Observation terms shared by training (the Gymnasium env) and deployment (the executor).

Both sides build observations with :func:`build_observation` from the same inputs a real
robot has: *measured* joint positions/velocities, the goal, the tracked object pose, and the
flange/tool positions from forward kinematics of the measured positions (never simulator
ground truth). A policy's manifest lists the terms in order; this module is the only place
that knows what they mean, and which input each needs (:data:`TERM_INPUTS`): the policy node
subscribes to exactly those, and a bundle whose inputs are not available refuses to start.

One term has a size the manifest declares rather than the robot (:data:`SIZED_TERMS`):
``latent``, the one-hot code of an exploration policy family (``simreal train --explore N``),
provided by the policy node from its ``latent`` parameter and ``latent_topic``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from simreal_ros.robot import RobotModel


@dataclass
class ObsInputs:
    """What an observation is built from (arrays in the robot's joint order)."""

    q: np.ndarray
    dq: np.ndarray
    goal: np.ndarray  # goal position of the flange in the base frame (m)
    last_action: np.ndarray
    flange: np.ndarray | None = None  # filled from FK(q) when None
    belief: np.ndarray | None = None  # optional hidden-parameter estimate (estimator)
    tool: np.ndarray | None = None  # tool tip (m, base frame) from FK(q) and the tool offset
    object: np.ndarray | None = None  # tracked object position (m, base frame)
    latent: np.ndarray | None = None  # one-hot latent code of an exploration policy family


def _flange(robot: RobotModel, x: ObsInputs) -> np.ndarray:
    if x.flange is None:
        x.flange = robot.fk(x.q)[:3, 3]
    return x.flange


def _belief(robot: RobotModel, x: ObsInputs) -> np.ndarray:
    """The estimator's belief vector: [viscous(n), coulomb(n), payload, armature(n)] then their stds."""
    size = 2 * (3 * robot.n_joints + 1)
    if x.belief is None or np.shape(x.belief) != (size,):
        raise ValueError(f"observation term 'belief' needs the estimator's {size}-value belief vector "
                         f"(simreal_ros.estimator.belief), got {None if x.belief is None else np.shape(x.belief)}")
    return x.belief


def _latent(robot: RobotModel, x: ObsInputs) -> np.ndarray:
    if x.latent is None:
        raise ValueError("observation term 'latent' needs the latent code (the policy node's 'latent' parameter or "
                         "latent_topic), which was not given")
    return np.asarray(x.latent, dtype=float)


def one_hot(index: int, size: int) -> np.ndarray:
    """The latent code ``index`` of ``size`` as the ``latent`` term's value (ValueError when out of range)."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < size:
        raise ValueError(f"latent code {index!r} is not an integer in [0, {size - 1}]")
    z = np.zeros(size)
    z[int(index)] = 1.0
    return z


def _need(x: ObsInputs, key: str, term: str) -> np.ndarray:
    v = getattr(x, key)
    if v is None:
        raise ValueError(f"observation term '{term}' needs the {key} position, which was not given")
    return np.asarray(v, dtype=float)


#: term name -> (size for a 7-joint arm as a function of n_joints, builder)
TERMS: dict[str, tuple[Callable[[int], int], Callable[[RobotModel, ObsInputs], np.ndarray]]] = {
    "joint_pos": (lambda n: n, lambda r, x: x.q - r.ready_pose),  # relative to the ready pose
    "joint_vel": (lambda n: n, lambda r, x: x.dq),
    "flange_pos": (lambda n: 3, _flange),
    "goal_pos": (lambda n: 3, lambda r, x: x.goal),
    "goal_delta": (lambda n: 3, lambda r, x: x.goal - _flange(r, x)),
    "last_action": (lambda n: n, lambda r, x: x.last_action),
    "belief": (lambda n: 2 * (3 * n + 1), _belief),  # optional; from the state estimator's /simreal/belief
    # the push task: everything in the table plane (x, y)
    "tool_xy": (lambda n: 2, lambda r, x: _need(x, "tool", "tool_xy")[:2]),
    "object_xy": (lambda n: 2, lambda r, x: _need(x, "object", "object_xy")[:2]),
    "goal_xy": (lambda n: 2, lambda r, x: x.goal[:2]),
    "tool_to_object": (lambda n: 2, lambda r, x: _need(x, "object", "tool_to_object")[:2]
                       - _need(x, "tool", "tool_to_object")[:2]),
    "object_to_goal": (lambda n: 2, lambda r, x: x.goal[:2] - _need(x, "object", "object_to_goal")[:2]),
    "last_action_xy": (lambda n: 2, lambda r, x: x.last_action),  # for 2-D (planar) actions
    # exploration families: the one-hot latent code; its size is the manifest's (SIZED_TERMS)
    "latent": (lambda n: 0, _latent),
}

#: terms whose size the manifest declares (not a function of the joints): name -> (least, most)
SIZED_TERMS: dict[str, tuple[int, int]] = {"latent": (1, 64)}

#: the inputs each term needs: ``joint_state`` (the estimator's state), ``goal`` (the goal
#: topic), ``object_pose`` (the object tracker's pose), ``belief`` (the estimator's belief)
TERM_INPUTS: dict[str, tuple[str, ...]] = {
    "joint_pos": ("joint_state",), "joint_vel": ("joint_state",), "flange_pos": ("joint_state",),
    "goal_pos": ("goal",), "goal_delta": ("goal", "joint_state"), "last_action": (), "belief": ("belief",),
    "tool_xy": ("joint_state",), "object_xy": ("object_pose",), "goal_xy": ("goal",),
    "tool_to_object": ("joint_state", "object_pose"), "object_to_goal": ("goal", "object_pose"),
    "last_action_xy": (), "latent": ("latent",),
}
INPUTS = ("joint_state", "goal", "object_pose", "belief", "latent")


def required_inputs(terms: Sequence[str]) -> tuple[str, ...]:
    """The inputs a list of terms needs, in :data:`INPUTS` order."""
    need = {i for t in terms for i in TERM_INPUTS[t]}
    return tuple(i for i in INPUTS if i in need)

DEFAULT_TERMS: tuple[str, ...] = ("joint_pos", "joint_vel", "flange_pos", "goal_pos", "goal_delta", "last_action")


def term_sizes(terms: Sequence[str | tuple[str, int]], n_joints: int) -> list[int]:
    """Sizes of ``terms``; a term of :data:`SIZED_TERMS` is given as ``(name, size)``."""
    names = [t[0] if isinstance(t, tuple) else t for t in terms]
    unknown = [t for t in names if t not in TERMS]
    if unknown:
        raise ValueError(f"unknown observation term(s) {unknown}; known: {sorted(TERMS)}")
    sized = [t for t in terms if not isinstance(t, tuple) and t in SIZED_TERMS]
    if sized:
        raise ValueError(f"observation term(s) {sized} need their size: give them as (name, size)")
    return [int(t[1]) if isinstance(t, tuple) else TERMS[t][0](n_joints) for t in terms]


def term_names(terms: Sequence[str | tuple[str, int]]) -> tuple[str, ...]:
    """The names of ``terms`` (entries may be ``(name, size)``)."""
    return tuple(t[0] if isinstance(t, tuple) else t for t in terms)


def build_observation(robot: RobotModel, terms: Sequence[str], inputs: ObsInputs) -> np.ndarray:
    """Concatenate ``terms`` (unnormalised) for ``inputs``."""
    return np.concatenate([np.asarray(TERMS[t][1](robot, inputs), dtype=np.float64).ravel() for t in terms])
