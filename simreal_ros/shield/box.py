"""Keep the flange inside a Cartesian box: the sent target, the whole path the shield would
brake along from it, and the measured arm. No ROS imports.

Checking only the new target and the joint-space end point of braking is not enough: the
joints stop at different times, so the flange's braking path bulges between those two
configurations (24.8 mm outside the box was seen). :class:`BoxGuard` therefore simulates the
braking the filter itself would command (``stop here`` requests, motion limits only) from
the candidate target, at steps of ``path_step``, and checks the flange at every point.
Far from the faces (more than a bound on any braking path's Cartesian length) the path is not
simulated.
"""

from __future__ import annotations

import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.shield.filter import MotionState, PositionFilter
from simreal_ros.shield.limits import stopping_distance

#: Flange points checked along a braking path at most (the path is cut there; a path that is
#: still moving then counts as leaving the box).
MAX_PATH_POINTS = 40


class BoxGuard:
    """``ok(q, v, a)``: may the shield send target ``q`` (with velocity/acceleration ``v``/``a``)?

    Args:
        robot: for forward kinematics (flange position).
        box: ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` in the base frame (m).
        motion_filter: the shield's position filter; its motion rows simulate braking.
        path_step: time step of the simulated braking (s); the shield sets :attr:`h` to its
            current step before each check.
        reach: upper bound of the flange's distance from any joint axis (m); with the joint
            stopping distances it bounds the Cartesian braking distance.
    """

    def __init__(self, robot: RobotModel, box, motion_filter: PositionFilter, path_step: float,
                 reach: float = 1.3) -> None:
        self.robot = robot
        self.lo, self.hi = (np.asarray(b, dtype=float) for b in box)
        self.filter = motion_filter
        self.h = float(min(path_step, motion_filter.lim.h))
        self.reach = reach
        self.tol = 1e-6
        self.reference_q: np.ndarray | None = None  # the last sent target (set by the shield)

    def outside(self, q: np.ndarray) -> float:
        """Distance of the flange at ``q`` outside the box (0 inside)."""
        p = self.robot.fk(q)[:3, 3]
        return float(np.linalg.norm(p - np.clip(p, self.lo, self.hi)))

    def margin(self, q: np.ndarray) -> float:
        """Distance of the flange at ``q`` to the nearest face (negative outside)."""
        p = self.robot.fk(q)[:3, 3]
        return float(np.min(np.concatenate([p - self.lo, self.hi - p])))

    def braking_path(self, q: np.ndarray, v: np.ndarray, a: np.ndarray) -> list[np.ndarray] | None:
        """Targets the filter would send while braking from ``(q, v, a)`` (``q`` first), at
        steps of ``self.h`` (the shield's current step, so the path is the one it will take),
        coarser if the path would need more than MAX_PATH_POINTS; None if it does not come to
        rest even at the longest step."""
        h = self.h
        while True:
            st = MotionState(0.0, q, v, a, None)
            out = [q]
            for _ in range(MAX_PATH_POINTS - 1):
                if not (np.any(st.v != 0.0) or np.any(st.a != 0.0)):
                    return out
                st = self.filter.step(st, st.q, st.t + h, None, None).state
                out.append(st.q)
            if h >= self.filter.lim.h:
                return None
            h = min(2.0 * h, self.filter.lim.h)

    def ok(self, q: np.ndarray, v: np.ndarray, a: np.ndarray, measured: np.ndarray | None = None) -> bool:
        """True if the flange at ``q`` and along its braking path stays inside the box, or (when
        already outside) gets no farther out than the worst of the last sent target and the
        measured arm."""
        lim = self.filter.lim
        worst_now = 0.0
        for x in (self.reference_q, measured):
            if x is not None:
                worst_now = max(worst_now, self.outside(x))
        allowed = worst_now + self.tol
        d_stop = np.maximum(stopping_distance(lim, v, a), stopping_distance(lim, -v, -a))
        bound = self.reach * float(np.sum(np.abs(q - self.reference_q) if self.reference_q is not None else 0.0)
                                   + np.sum(d_stop))
        if self.margin(q) > bound + self.tol:
            return True  # no braking path from here can reach a face
        path = self.braking_path(q, v, a)
        return path is not None and all(self.outside(x) <= allowed for x in path)
