"""Keep the arm inside a Cartesian box: the sent target, the whole path the shield would
brake along from it, and the measured arm. No ROS imports.

What is kept inside: the flange point and, with ``links=True``, the collision geometry of every
moving link (the robot description's collision shapes, as the MuJoCo model built from the URDF
has them). Each shape is bounded by capsules (two end points and a radius; a box by its corners):
a capsule lies inside the box exactly when both end points lie inside the box shrunk by its
radius, since the box is convex. The flange alone is not enough near a table: the wrist and
the elbow hang below the flange when it points up (they hit the table top with the flange
15 cm above it).

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

import mujoco
import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import build_model
from simreal_ros.shield.filter import MotionState, PositionFilter
from simreal_ros.shield.limits import stopping_distance

#: Flange points checked along a braking path at most (a path still moving then counts as
#: leaving the box).
MAX_PATH_POINTS = 40
#: Longest step of a simulated braking path (s).
PATH_GAP = 0.1


def collision_points(robot: RobotModel, sim=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The points kept inside the box for the collision geometry of the moving links:
    ``(frame, local, axis, radius)`` per point. ``frame`` indexes ``robot.link_transforms(q)``
    (joint ``i``'s child link; ``n_joints``: the flange), ``local`` is the point in that frame
    (m). The point carries a disc of ``radius`` (m) normal to ``axis`` (a unit vector in that
    frame; zero: a ball): cylinders are their two end discs, capsules their two end balls,
    spheres their centre ball, boxes their 8 corners. A convex shape is inside the (convex)
    box exactly when these are. Geometry that does not collide (contype and conaffinity 0) is
    left out. ``sim``: the robot's MuJoCo model (:func:`build_model`; built if not given)."""
    sim = sim or build_model(robot)
    m = sim.model
    frames = {j.child: i for i, j in enumerate(robot.joints)}
    frames[robot.flange_link] = robot.n_joints
    G = mujoco.mjtGeom
    out: list[tuple[int, np.ndarray, np.ndarray, float]] = []
    for g in range(m.ngeom):
        body = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(m.geom_bodyid[g]))
        if body not in frames or (m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0):
            continue
        R = np.empty(9)
        mujoco.mju_quat2Mat(R, m.geom_quat[g])
        R = R.reshape(3, 3)
        size, pos, kind, f, z = m.geom_size[g], m.geom_pos[g].copy(), G(int(m.geom_type[g])), frames[body], np.zeros(3)
        if kind in (G.mjGEOM_CYLINDER, G.mjGEOM_CAPSULE):
            axis = R[:, 2] if kind == G.mjGEOM_CYLINDER else z
            out += [(f, pos + sg * size[1] * R[:, 2], axis, float(size[0])) for sg in (1.0, -1.0)]
        elif kind == G.mjGEOM_SPHERE:
            out.append((f, pos, z, float(size[0])))
        elif kind == G.mjGEOM_BOX:
            out += [(f, pos + R @ (size * c), z, 0.0) for c in np.array(list(np.ndindex(2, 2, 2))) * 2.0 - 1.0]
        else:
            raise ValueError(f"box check: collision geometry of type {int(kind)} on {body} is not supported "
                             "(cylinder, capsule, sphere, box)")
    if not out:
        return np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
    fr, loc, ax, rad = zip(*out)
    return np.array(fr, dtype=int), np.array(loc), np.array(ax), np.array(rad)


class BoxGuard:
    """``ok(q, v, a)``: may the shield send target ``q`` (with velocity/acceleration ``v``/``a``)?

    Args:
        robot: for forward kinematics (flange position).
        box: ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` in the base frame (m).
        motion_filter: the shield's position filter; its motion rows simulate braking.
        path_step: time step of the simulated braking (s); the shield sets :attr:`h` to its
            current step before each check.
        reach: upper bound of any checked point's distance from any joint axis (m); with the
            joint stopping distances it bounds the Cartesian braking distance.
        links: also keep the moving links' collision geometry inside (:func:`collision_points`),
            not only the flange.
        clearance: the targets keep this far inside the box (m), room for the arm's tracking
            error (it lags, overshoots and sags under an unknown payload).
    """

    def __init__(self, robot: RobotModel, box, motion_filter: PositionFilter, path_step: float,
                 reach: float = 1.3, links: bool = False, clearance: float = 0.0) -> None:
        self.robot = robot
        self.lo, self.hi = (np.asarray(b, dtype=float) + sg * clearance for b, sg in zip(box, (1.0, -1.0)))
        # the flange point, then (links) the collision geometry's points, discs and balls; the
        # link frames come from MuJoCo's kinematics (20x cheaper than RobotModel.link_transforms)
        sim = build_model(robot)
        self._m, self._d, self._qa = sim.model, mujoco.MjData(sim.model), sim.qpos_adr
        fr, loc, ax, rad = (collision_points(robot, sim) if links else
                            (np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)))
        self._frame = np.concatenate([[robot.n_joints], fr]).astype(int)
        links_ = [j.child for j in robot.joints] + [robot.flange_link]
        body = np.array([mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_BODY, n) for n in links_])
        self._body = body[self._frame]
        self._local = np.vstack([np.zeros((1, 3)), loc])
        self._axis = np.vstack([np.zeros((1, 3)), ax])
        self._la = np.stack([self._local, self._axis], axis=2)  # (points, 3, 2): one matmul for both
        self._radius = np.concatenate([[0.0], rad])[:, None]
        if np.any(self.hi - self.lo < 2.0 * self._radius.max()):
            raise ValueError(f"box {self.lo.tolist()}..{self.hi.tolist()} (after the clearance) is thinner than the "
                             f"arm's collision geometry (radius up to {float(self._radius.max())} m)")
        # the shield's limits, but motion continued over steps up to PATH_GAP (see braking_path)
        self.filter = PositionFilter(replace(motion_filter.lim, h=PATH_GAP), motion_filter.K, motion_filter.D)
        self.h = float(path_step)
        self.reach = reach
        self.tol = 1e-6
        self.reference_q: np.ndarray | None = None  # the last sent target (set by the shield)

    def points(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The checked points at ``q`` in the base frame (the flange first), shape (m, 3), and
        each one's extent along the base axes (its disc or ball), same shape."""
        m, d = self._m, self._d
        d.qpos[self._qa] = q
        mujoco.mj_kinematics(m, d)
        la = d.xmat[self._body].reshape(-1, 3, 3) @ self._la
        a = la[:, :, 1]
        return la[:, :, 0] + d.xpos[self._body], self._radius * np.sqrt(np.maximum(1.0 - a * a, 0.0))

    def outside(self, q: np.ndarray) -> float:
        """How far the arm at ``q`` is outside the box (the worst point; 0 inside)."""
        p, e = self.points(q)
        over = np.maximum(np.maximum(self.lo + e - p, p + e - self.hi), 0.0)
        return float(np.max(np.linalg.norm(over, axis=1)))

    def margin(self, q: np.ndarray) -> float:
        """Distance of the arm at ``q`` to the nearest face (the worst point; negative outside)."""
        p, e = self.points(q)
        return float(np.min(np.concatenate([p - e - self.lo, self.hi - p - e])))

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
        """True if the arm at ``q`` and along its braking path stays inside the box, or (when
        already outside) gets no farther out than the last sent target (the measured arm before
        the first one). Not the measured arm once a target was sent: it is outside by its
        tracking error, and allowing the targets as far out would ratchet them outwards."""
        lim = self.filter.lim
        ref = self.reference_q if self.reference_q is not None else measured
        allowed = (0.0 if ref is None else self.outside(ref)) + self.tol
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
