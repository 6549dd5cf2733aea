"""The arm's inertial coupling, for the shield's position filter (see shield.filter). No ROS imports.

The per-joint limit rows do not see that the joints are one body: a held target step of the
heavy joints accelerates them far past their acceleration limit and the mass matrix passes that
on to the light wrist. :class:`JointCoupling` predicts each joint's speed from the command's net
impedance torques through the inertia of the robot description's MuJoCo model.
"""

from __future__ import annotations

import mujoco
import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import build_model


class JointCoupling:
    """Each joint's speed predicted from the net impedance torques through the arm's inertia.

    ``tau_j`` accelerates joint j by about ``tau_j / M_jj``, which pushes joint i with
    ``c_i = sum_(j != i) M_ij tau_j / M_jj``; a light joint (wrist: M_66 ~ 0.013 kg m^2, D = 4)
    settles within milliseconds at ``dq_i + (tau_i - c_i) / D_i``. Measured at a 20 Hz held
    target: the wrist reached 1.15 x its velocity limit with its own target within the
    tracking lead. M is the robot description's MuJoCo model (nominal: no payload, armature).
    """

    def __init__(self, robot: RobotModel, v_max: np.ndarray, D: np.ndarray, samples: int = 128, seed: int = 0) -> None:
        sim = build_model(robot)
        self._m, self._d = sim.model, mujoco.MjData(sim.model)
        self._qa, self._idx = sim.qpos_adr, np.ix_(sim.dof_adr, sim.dof_adr)
        self._full = np.zeros((sim.model.nv, sim.model.nv))
        self.v, self.D = np.asarray(v_max, dtype=float), np.asarray(D, dtype=float)
        # screen: |M_ij| / M_jj over sampled configurations (x 1.5), so that a cycle whose
        # torques are too small to matter skips the mass matrix
        rng = np.random.default_rng(seed)
        lo, hi = robot.limits.position_min, robot.limits.position_max
        ratio = np.zeros((len(self.v), len(self.v)))
        for _ in range(samples):
            M = self.mass(rng.uniform(lo, hi))
            ratio = np.maximum(ratio, np.abs(M) / np.diag(M)[None, :])
        np.fill_diagonal(ratio, 0.0)
        self.ratio = 1.5 * ratio

    def mass(self, q: np.ndarray) -> np.ndarray:
        """The joint-space mass matrix at ``q`` (robot joint order)."""
        m, d = self._m, self._d
        d.qpos[self._qa] = q
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_crb(m, d)
        mujoco.mj_fullM(m, d, self._full)
        return self._full[self._idx]

    def scale(self, qm: np.ndarray, dqm: np.ndarray, tau: np.ndarray) -> float:
        """The largest factor in [0, 1] on every net torque ``tau`` (measured state ``qm``,
        ``dqm``) that keeps each joint's predicted speed within its limit (1 when the torques
        are too small to matter: the mass matrix is then not computed)."""
        v, D = self.v, self.D
        a = np.abs(tau)
        if np.all(np.abs(dqm) + (a + self.ratio @ a) / D <= v):
            return 1.0
        M = self.mass(qm)
        m = np.diag(M)
        acc = tau / m
        g = (tau - (M @ acc - m * acc)) / D  # d(predicted speed) / d(scale)
        room = np.where(g > 0, v - dqm, v + dqm)
        fixable = (np.abs(dqm) <= v) & (g != 0)  # a joint already too fast is the other rows' job
        with np.errstate(divide="ignore"):
            s = np.where(fixable, room / np.abs(g), np.inf)
        return float(min(1.0, max(0.0, s.min())))
