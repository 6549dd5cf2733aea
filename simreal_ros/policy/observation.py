"""Observation terms shared by training (the Gymnasium env) and deployment (the executor).

Both sides build observations with :func:`build_observation` from the same inputs a real
robot has: *measured* joint positions/velocities, the goal, and the flange position from
forward kinematics of the measured positions (never simulator ground truth). A policy's
manifest lists the terms in order; this module is the only place that knows what they mean.
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


#: term name -> (size for a 7-joint arm as a function of n_joints, builder)
TERMS: dict[str, tuple[Callable[[int], int], Callable[[RobotModel, ObsInputs], np.ndarray]]] = {
    "joint_pos": (lambda n: n, lambda r, x: x.q - r.ready_pose),  # relative to the ready pose
    "joint_vel": (lambda n: n, lambda r, x: x.dq),
    "flange_pos": (lambda n: 3, _flange),
    "goal_pos": (lambda n: 3, lambda r, x: x.goal),
    "goal_delta": (lambda n: 3, lambda r, x: x.goal - _flange(r, x)),
    "last_action": (lambda n: n, lambda r, x: x.last_action),
    "belief": (lambda n: 2 * (3 * n + 1), _belief),  # optional; from the state estimator's /simreal/belief
}

DEFAULT_TERMS: tuple[str, ...] = ("joint_pos", "joint_vel", "flange_pos", "goal_pos", "goal_delta", "last_action")


def term_sizes(terms: Sequence[str], n_joints: int) -> list[int]:
    unknown = [t for t in terms if t not in TERMS]
    if unknown:
        raise ValueError(f"unknown observation term(s) {unknown}; known: {sorted(TERMS)}")
    return [TERMS[t][0](n_joints) for t in terms]


def build_observation(robot: RobotModel, terms: Sequence[str], inputs: ObsInputs) -> np.ndarray:
    """Concatenate ``terms`` (unnormalised) for ``inputs``."""
    return np.concatenate([np.asarray(TERMS[t][1](robot, inputs), dtype=np.float64).ravel() for t in terms])
