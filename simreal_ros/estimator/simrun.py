"""Run the estimator against the MuJoCo sim's ground truth (tests, bench, tuning; ROS-free).

:func:`run_against_sim` drives :class:`~simreal_ros.sim.arm.ArmSim` along an excitation
trajectory (position targets to its impedance controller, one per measurement period),
feeds every measurement that arrives to a :class:`StateEstimator` (optionally corrupting
some with outliers first) and records, per accepted-or-not sample, the estimate at the
sample's stamp, the sim's true state at that instant, the raw sample, and belief
snapshots at chosen times.

The sim's velocity (``qvel`` of semi-implicit Euler) is the mean velocity of the last step;
with ``kalman.velocity_delay`` set, the recorded estimate velocity is the filter's velocity
that many seconds earlier (``v - delay * a``, with its variance), the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simreal_ros.estimator.belief import BeliefState
from simreal_ros.estimator.estimator import StateEstimator
from simreal_ros.estimator.excitation import ExcitationTrajectory
from simreal_ros.sim.arm import ArmSim


@dataclass
class SimTrace:
    """What :func:`run_against_sim` recorded (rows: samples that reached the estimator)."""

    stamp: np.ndarray
    position: np.ndarray  # estimate at the stamp
    velocity: np.ndarray
    acceleration: np.ndarray
    position_std: np.ndarray
    velocity_std: np.ndarray
    true_position: np.ndarray
    true_velocity: np.ndarray
    raw_position: np.ndarray
    raw_velocity: np.ndarray
    outlier: np.ndarray  # (samples,) this sample was corrupted on purpose
    now_error: np.ndarray  # |estimate(now) - truth(now)| of positions when the sample arrived
    stale_error: np.ndarray  # |raw sample - truth(now)| of positions (using it as if it were current)
    beliefs: dict[float, BeliefState] = field(default_factory=dict)
    coulomb_saturation: np.ndarray | None = None  # per joint: share of fast samples at |frictionloss|
    contacts: int = 0

    def true_acceleration(self) -> tuple[np.ndarray, np.ndarray]:
        """(true mean acceleration between consecutive samples, estimate at their midpoint)."""
        a = np.diff(self.true_velocity, axis=0) / np.diff(self.stamp)[:, None]
        return a, 0.5 * (self.acceleration[1:] + self.acceleration[:-1])

    def finite_difference_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """(velocity, truth) by differencing consecutive raw positions (the naive baseline)."""
        v = np.diff(self.raw_position, axis=0) / np.diff(self.stamp)[:, None]
        return v, self.true_velocity[1:]


def run_against_sim(sim: ArmSim, estimator: StateEstimator, duration: float,
                    excitation: ExcitationTrajectory | None = None, outlier_rate: float = 0.0,
                    rng: np.random.Generator | None = None, checkpoints: tuple[float, ...] = (),
                    min_speed: float = 0.1) -> SimTrace:
    """Excite ``sim`` for ``duration`` s and record the estimator against the ground truth.

    Args:
        outlier_rate: probability per sample that one random joint gets a spike in position
            (0.01-0.1 rad) and velocity (0.5-2 rad/s).
        checkpoints: sim times (s) at which to snapshot the belief.
        min_speed: speed (rad/s) above which the Coulomb saturation statistic is taken.
    """
    rng = rng or np.random.default_rng(0)
    excitation = excitation or ExcitationTrajectory(sim.robot)
    period = sim.config.measurement_period
    steps = int(round(duration / period))
    n = sim.robot.n_joints
    truth: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows: dict[str, list] = {k: [] for k in ("stamp", "position", "velocity", "acceleration", "position_std", "velocity_std",
                                             "true_position", "true_velocity", "raw_position", "raw_velocity",
                                             "outlier", "now_error", "stale_error")}
    beliefs: dict[float, BeliefState] = {}
    pending = sorted(checkpoints)
    fast = np.zeros(n)
    saturated = np.zeros(n)
    friction = sim.model.dof_frictionloss[sim.sim.dof_adr]
    contacts = 0
    delay = estimator.config.kalman.velocity_delay
    for i in range(steps):
        q_cmd, _, _ = excitation(i * period)
        sim.set_command(q_cmd)
        sim.advance(period)
        now = sim.true_state()
        key = round(now.stamp * 1e6)
        truth[key] = (now.position, now.velocity)
        contacts = max(contacts, int(sim.data.ncon))
        moving = np.abs(now.velocity) > min_speed
        fast += moving
        saturated += moving & (np.abs(sim.data.qfrc_constraint[sim.sim.dof_adr]) >= 0.99 * friction)
        for m in sim.pop_measurements():
            q, dq = m.position.copy(), m.velocity.copy()
            corrupted = bool(outlier_rate > 0 and rng.random() < outlier_rate)
            if corrupted:
                j = rng.integers(n)
                q[j] += rng.choice([-1.0, 1.0]) * rng.uniform(0.01, 0.1)
                dq[j] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 2.0)
            estimator.process(m.stamp, q, dq, m.effort)
            at = estimator.estimate(m.stamp)
            h = np.array([0.0, 1.0, -delay])
            vel = at.velocity - delay * at.acceleration
            vel_std = np.sqrt(np.einsum("i,nij,j->n", h, at.covariance, h))
            t_pos, t_vel = truth.pop(round(m.stamp * 1e6))
            ahead = estimator.estimate(now.stamp)
            for k, v in (("stamp", m.stamp), ("position", at.position), ("velocity", vel),
                         ("acceleration", at.acceleration),
                         ("position_std", at.position_std), ("velocity_std", vel_std),
                         ("true_position", t_pos), ("true_velocity", t_vel), ("raw_position", m.position),
                         ("raw_velocity", m.velocity), ("outlier", corrupted),
                         ("now_error", np.abs(ahead.position - now.position)),
                         ("stale_error", np.abs(m.position - now.position))):
                rows[k].append(v)
        # Truth of samples that were dropped is never claimed: forget stamps older than the latency.
        horizon = round((now.stamp - sim.draw.observation_latency - 2 * period) * 1e6)
        for k in [k for k in truth if k < horizon]:
            del truth[k]
        while pending and now.stamp >= pending[0] - 1e-9:
            b = estimator.belief()
            if b is not None:
                beliefs[pending[0]] = b
            pending.pop(0)
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        sat = np.where(fast > 0, saturated / np.maximum(fast, 1), np.nan)
    return SimTrace(**arrays, beliefs=beliefs, coulomb_saturation=sat, contacts=contacts)
