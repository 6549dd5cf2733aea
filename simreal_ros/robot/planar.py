"""Moving a tool in a horizontal plane at a fixed height and orientation (ROS-free, numpy).

The push task's action is a displacement of the tool tip in the table plane. It becomes joint
position targets through the robot model, so the safety shield still checks joint targets.
:class:`PlanarReference` keeps the tip's reference point: each action moves it (kept in the
workspace rectangle and never more than ``max_lead`` from where the *measured* joints put the
tip), and a damped-least-squares pose IK from the measured joints turns it into joint targets,
tool pointing straight down at the plane's height. The same code runs in the Gymnasium env, in
evaluation and in the policy executor on the robot.

Why a reference and not "measured tip + displacement": the joint impedance controller leaves a
steady-state error under friction and an uncompensated payload (several mm at the wrist), so
targets always relative to the measured arm stall short of where the controller asked; the
bounded lead lets the target get ahead of the arm by at most ``max_lead`` (a blocked tool then
pushes with at most the impedance force of that lead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simreal_ros.robot.model import RobotModel

#: flange orientation while pushing: tool (flange z) straight down, flange x along base x rotated
#: like the ready pose's (-45 deg about z), so the wrist stays near its ready configuration
_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class PlanarFrame:
    """The plane the tool tip moves in.

    Attributes:
        height: tip height in the base frame (m).
        tip: tool tip in the flange frame (m).
        workspace: (xmin, ymin, xmax, ymax) the tip is kept inside (m).
        rotation: flange orientation in the base frame (tool down).
        rest: joint posture the redundancy is pulled toward.
    """

    height: float
    tip: np.ndarray
    workspace: tuple[float, float, float, float]
    rotation: np.ndarray
    rest: np.ndarray

    @classmethod
    def for_robot(cls, robot: RobotModel, height: float, tip: np.ndarray,
                  workspace: tuple[float, float, float, float], start_xy: tuple[float, float]) -> PlanarFrame:
        """The frame with the ready pose's wrist yaw; ``rest`` is the IK solution at ``start_xy``."""
        R = _rot_z(-np.pi / 4) @ _DOWN
        R = robot.fk(robot.ready_pose)[:3, :3] if _angle(robot.fk(robot.ready_pose)[:3, :3], R) < 0.3 else R
        frame = cls(float(height), np.asarray(tip, dtype=float), tuple(float(v) for v in workspace), R,
                    np.array(robot.ready_pose, dtype=float))
        res = solve_pose_ik(robot, frame.flange_position(start_xy), R, robot.ready_pose, rest=robot.ready_pose,
                            max_iterations=200)
        if not res[2]:
            raise ValueError(f"the tool's start {tuple(start_xy)} at height {height} m is out of the arm's reach "
                             f"(IK error {res[1]:.4f} m)")
        return cls(frame.height, frame.tip, frame.workspace, R, res[0])

    def flange_position(self, xy) -> np.ndarray:
        """Flange position putting the tip at ``xy`` on the plane."""
        return np.array([xy[0], xy[1], self.height]) - self.rotation @ self.tip

    def tip_position(self, robot: RobotModel, q: np.ndarray) -> np.ndarray:
        """Tool tip in the base frame at joints ``q`` (FK)."""
        T = robot.fk(q)
        return T[:3, 3] + T[:3, :3] @ self.tip

    def clip(self, xy) -> np.ndarray:
        x0, y0, x1, y1 = self.workspace
        return np.array([np.clip(xy[0], x0, x1), np.clip(xy[1], y0, y1)])


def _angle(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1.0, 1.0)))


def solve_pose_ik(robot: RobotModel, position: np.ndarray, rotation: np.ndarray, q0: np.ndarray, *,
                  rest: np.ndarray | None = None, damping: float = 0.02, posture_gain: float = 0.1,
                  margin: float = 0.05, tolerance: float = 1e-5, max_iterations: int = 20,
                  max_step: float = 0.2) -> tuple[np.ndarray, float, bool]:
    """Joints putting the flange at ``position`` with ``rotation``, from ``q0`` (damped least squares,
    redundancy toward ``rest``, iterates clipped to the position limits shrunk by ``margin``).

    Returns (q, remaining error norm of [position (m), orientation (rad)], converged).
    """
    lim = robot.limits
    lo, hi = lim.position_min + margin, lim.position_max - margin
    q = np.clip(np.asarray(q0, dtype=float), lo, hi)
    rest = q.copy() if rest is None else np.asarray(rest, dtype=float)
    lam2 = damping * damping
    err = np.inf
    for _ in range(max_iterations):
        T = robot.fk(q)
        R = T[:3, :3]
        e = np.concatenate([position - T[:3, 3], 0.5 * (np.cross(R[:, 0], rotation[:, 0]) + np.cross(R[:, 1], rotation[:, 1])
                                                         + np.cross(R[:, 2], rotation[:, 2]))])
        err = float(np.linalg.norm(e))
        if err < tolerance:
            return q, err, True
        J = robot.jacobian(q)
        JJt = J @ J.T
        dq = J.T @ np.linalg.solve(JJt + lam2 * np.eye(6), e)
        if posture_gain > 0:
            null = np.eye(robot.n_joints) - J.T @ np.linalg.solve(JJt + 1e-9 * np.eye(6), J)
            dq = dq + null @ (posture_gain * (rest - q))
        biggest = float(np.max(np.abs(dq)))
        if biggest > max_step:
            dq *= max_step / biggest
        q = np.clip(q + dq, lo, hi)
    return q, err, err < 1e-3


def planar_target(robot: RobotModel, q: np.ndarray, delta_xy: np.ndarray, frame: PlanarFrame,
                  iterations: int = 8) -> np.ndarray:
    """Joint position target moving the tool tip by ``delta_xy`` (m) from where the measured joints
    ``q`` put it, kept inside the workspace, on the plane, tool down."""
    tip = frame.tip_position(robot, q)
    xy = frame.clip(tip[:2] + np.asarray(delta_xy, dtype=float))
    target, _, _ = solve_pose_ik(robot, frame.flange_position(xy), frame.rotation, q, rest=frame.rest,
                                 max_iterations=iterations)
    return target


class PlanarReference:
    """The tip's reference point for planar actions (one per episode/session).

    Args:
        robot: the robot model. frame: the plane. max_lead: the most the reference may be ahead
            of the measured tip (m).
    """

    def __init__(self, robot: RobotModel, frame: PlanarFrame, max_lead: float = 0.03) -> None:
        if not max_lead > 0:
            raise ValueError(f"max_lead must be > 0 m, got {max_lead}")
        self.robot, self.frame, self.max_lead = robot, frame, float(max_lead)
        self.point: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the reference: the next step starts from the measured tip."""
        self.point = None

    def step(self, q: np.ndarray, delta_xy: np.ndarray, iterations: int = 8) -> np.ndarray:
        """Move the reference by ``delta_xy`` (m) and return the joint target for it, from the
        measured joints ``q``."""
        tip = self.frame.tip_position(self.robot, q)[:2]
        ref = tip if self.point is None else self.point
        ref = self.frame.clip(ref + np.asarray(delta_xy, dtype=float))
        lead = ref - tip
        n = float(np.linalg.norm(lead))
        if n > self.max_lead:
            ref = tip + lead * (self.max_lead / n)
        self.point = ref
        target, _, _ = solve_pose_ik(self.robot, self.frame.flange_position(ref), self.frame.rotation, q,
                                     rest=self.frame.rest, max_iterations=iterations)
        return target
