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

from dataclasses import replace

import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.shield.filter import MotionState, PositionFilter
from simreal_ros.shield.limits import stopping_distance

#: Flange points checked along a braking path at most (a path still moving then counts as
#: leaving the box).
MAX_PATH_POINTS = 40
#: Longest step of a simulated braking path (s).
PATH_GAP = 0.1


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
        # the shield's limits, but motion continued over steps up to PATH_GAP (see braking_path)
        self.filter = PositionFilter(replace(motion_filter.lim, h=PATH_GAP), motion_filter.K, motion_filter.D)
        self.h = float(path_step)
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
        """Targets the shield would send while braking from ``(q, v, a)`` (``q`` first).

        When the braking fits in MAX_PATH_POINTS steps of the shield's current step ``self.h``,
        the shield's own filter is run ("stop here" requests, motion limits only): exactly the
        path it will take. Otherwise (short steps, e.g. 1 kHz) each joint's time-optimal
        jerk-limited stop, which the filter's braking follows at short steps, is integrated
        exactly (piecewise-constant jerk) at MAX_PATH_POINTS instants. Simulating the filter
        with longer steps instead would not do: it brakes sooner at long steps, and the real
        path left the box where the coarse one did not. None: it does not come to rest.
        """
        lim = self.filter.lim
        t_stop = float(np.max((np.abs(v) + a * a / (2.0 * lim.j)) / lim.a + 2.0 * lim.a / lim.j + np.abs(a) / lim.j))
        if t_stop <= (MAX_PATH_POINTS - 2) * self.h:
            st = MotionState(0.0, q, v, a, None)
            out = [q]
            for k in range(1, MAX_PATH_POINTS):
                if not (np.any(st.v != 0.0) or np.any(st.a != 0.0)):
                    return out
                st = self.filter.step(st, st.q, k * self.h, None, None).state
                out.append(st.q)
            return None
        return [q + d for d in _time_optimal_stop(v, a, lim.a, lim.j, t_stop, MAX_PATH_POINTS)]

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


def _time_optimal_stop(v: np.ndarray, a: np.ndarray, a_max: np.ndarray, j_max: np.ndarray, t_stop: float,
                       n: int) -> list[np.ndarray]:
    """Displacements of each joint, at ``n`` instants over ``t_stop`` (+10 %), while it stops as
    fast as its jerk and acceleration limits allow from velocity ``v`` and acceleration ``a``:
    the acceleration ramps (jerk ``-j``) toward ``-a_max`` and back to zero (jerk ``+j``) just in
    time to end at rest. Sub-steps integrate piecewise-constant jerk exactly."""
    s = np.where(v != 0.0, np.sign(v), np.where(a != 0.0, np.sign(a), 1.0))  # mirror onto v >= 0
    vel, acc, pos = s * v, s * a, np.zeros_like(v)
    sub = 2
    dt = 1.1 * t_stop / ((n - 1) * sub)
    out = [pos.copy()]
    moving = np.ones_like(v, dtype=bool)
    for k in range(1, (n - 1) * sub + 1):
        # keep braking while the velocity left exceeds what ramping the acceleration back to
        # zero removes (a^2 / 2j); then ramp it back
        ramp_back = (acc < 0.0) & (vel <= acc * acc / (2.0 * j_max))
        jerk = np.where(ramp_back, j_max, np.where(acc > -a_max, -j_max, 0.0))
        # do not pass the acceleration bounds within the sub-step
        jerk = np.where(ramp_back, np.minimum(jerk, -acc / dt), np.maximum(jerk, (-a_max - acc) / dt))
        jerk = np.where(moving, jerk, 0.0)
        pos = pos + np.where(moving, vel * dt + acc * dt * dt / 2.0 + jerk * dt ** 3 / 6.0, 0.0)
        vel_new = vel + acc * dt + jerk * dt * dt / 2.0
        acc = acc + jerk * dt
        stopped = moving & (vel_new <= 0.0)
        vel = np.where(stopped, 0.0, vel_new)
        acc = np.where(stopped, 0.0, acc)
        moving &= ~stopped
        if k % sub == 0:
            out.append(pos.copy())
    return [s * x for x in out]
