"""Inverse dynamics of the *nominal* arm and the regressor of the hidden parameters (ROS-free).

The identification model (verified against the MuJoCo sim's ground truth, see
``test/test_estimator_belief.py``)::

    tau_measured = ID_nominal(q, dq, ddq) + b * dq + f_c * sign(dq) + m * Y_payload(q, dq, ddq)

* ``tau_measured`` is the motor-side torque (MuJoCo ``qfrc_actuator``: impedance/torque
  command plus the links' gravity compensation, which the actuators apply).
* ``ID_nominal`` is ``mj_inverse`` on the nominal model with constraints disabled; with
  ``actgravcomp`` its ``qfrc_inverse`` is exactly what the actuators must supply.
* ``b`` (N m s/rad) is viscous friction (MuJoCo ``damping``, a passive force) and ``f_c``
  (N m) Coulomb friction (MuJoCo ``frictionloss``, a constraint force in ``qfrc_constraint``):
  neither is in the nominal model, both are forces the motors must overcome, so they appear
  in the measured torque. ``m`` (kg) is the payload 3 cm beyond the flange, which no
  actuator compensates. Dynamics are linear in ``m`` (its inertia scales with it), so
  ``Y_payload`` is the difference of two inverse-dynamics calls (payload 1 kg vs none).

MuJoCo's ``frictionloss`` is a *soft* constraint: it only saturates at ``f_c`` once the
joint moves fast enough, and on a very light joint (the Panda's joint 7, ~1e-3 kg m^2 about
its axis) it hardly saturates at all at moderate speeds, so Coulomb friction there behaves
like extra damping and is not identifiable as such. Rows with ``|dq|`` below a threshold
are left out of the regression for that reason.
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import build_model

#: Unit payload (kg) used to compute the payload regressor.
UNIT_PAYLOAD = 1.0


class InverseDynamics:
    """Nominal inverse dynamics and the payload regressor at ``(q, dq, ddq)``.

    Args:
        robot: robot model (default: the package's Panda).
    """

    def __init__(self, robot: RobotModel | None = None) -> None:
        sim = build_model(robot)
        self.robot = sim.robot
        self._qa, self._da = sim.qpos_adr, sim.dof_adr
        base = copy.copy(sim.model)
        base.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONSTRAINT)
        pb = sim.payload_body
        self.payload_offset = base.body_pos[pb].copy()
        loaded = copy.copy(base)
        loaded.body_mass[pb] += UNIT_PAYLOAD
        loaded.body_inertia[pb] += UNIT_PAYLOAD * (2 * 0.03**2) / 3.0  # solid 6 cm cube, as the sim's payload
        self._models = (base, loaded)
        self._datas = (mujoco.MjData(base), mujoco.MjData(loaded))

    @property
    def n_joints(self) -> int:
        return len(self._da)

    def __call__(self, q: np.ndarray, dq: np.ndarray, ddq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(``ID_nominal``, ``Y_payload``) in N m, robot joint order."""
        out = []
        for m, d in zip(self._models, self._datas):
            d.qpos[self._qa] = q
            d.qvel[self._da] = dq
            d.qacc[self._da] = ddq
            mujoco.mj_inverse(m, d)
            out.append(d.qfrc_inverse[self._da].copy())
        return out[0], (out[1] - out[0]) / UNIT_PAYLOAD

    def acceleration(self, q: np.ndarray, dq: np.ndarray, tau: np.ndarray, viscous: np.ndarray,
                     coulomb: np.ndarray, payload: float, armature: np.ndarray,
                     stiction_speed: float) -> tuple[np.ndarray, np.ndarray]:
        """Forward dynamics with the identified parameters: the ``ddq`` that ``tau`` produces.

        Solves ``(M + m M_p + diag(a)) ddq = tau - h - m h_p - b dq - f_c s(dq)`` where ``s``
        is ``sign`` smoothed linearly below ``stiction_speed`` (the stick zone is unknown).
        Also returns the row norms of the inverse inertia matrix: a torque noise of std
        ``s`` on every joint gives ``ddq_i`` a std of ``s * norm_i``.
        """
        da = self._da
        Ms, hs = [], []
        for m, d in zip(self._models, self._datas):
            d.qpos[self._qa] = q
            d.qvel[da] = dq
            d.qacc[da] = 0.0
            mujoco.mj_inverse(m, d)  # with qacc = 0: qfrc_inverse = h(q, dq); also fills the inertia matrix
            full = np.zeros((m.nv, m.nv))
            mujoco.mj_fullM(m, d, full)
            Ms.append(full[np.ix_(da, da)])
            hs.append(d.qfrc_inverse[da].copy())
        w = payload / UNIT_PAYLOAD
        M = Ms[0] + w * (Ms[1] - Ms[0]) + np.diag(armature)
        h = hs[0] + w * (hs[1] - hs[0])
        rhs = tau - h - viscous * dq - coulomb * np.clip(dq / stiction_speed, -1.0, 1.0)
        Minv = np.linalg.inv(M)
        return Minv @ rhs, np.sqrt(np.sum(Minv * Minv, axis=1))
