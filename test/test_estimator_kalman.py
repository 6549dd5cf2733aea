"""The state estimator's Kalman filter: accuracy against the MuJoCo sim's ground truth, and
robustness to what real sensor streams do (drops, outliers, duplicates, reordering, restarts)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simreal_ros.estimator.belief import BeliefConfig
from simreal_ros.estimator.estimator import EstimatorConfig, StateEstimator, covariance_vector
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.estimator.kalman import JointKalmanFilter, KalmanConfig
from simreal_ros.estimator.simrun import run_against_sim
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import DynamicsRanges, RandomizationRanges, SensorRanges

N = 7
POS_STD, VEL_STD, EFF_STD = 5e-4, 1e-2, 0.2  # the "default" profile's worst-case sensor noise
#: MuJoCo's semi-implicit Euler reports the mean velocity of the last 1 ms step.
SIM_KALMAN = KalmanConfig(velocity_delay=0.0005)
#: The standard (fast) identification excitation: up to ~1 rad/s, the hardest case for consistency.
FAST = ExcitationConfig(base_frequency=0.3, amplitude=0.6, limit_fraction=0.5)


def noisy_sim(drop: float = 0.0, latency: float = 0.0, seed: int = 3) -> ArmSim:
    sensor = SensorRanges(position_noise_std=(POS_STD, POS_STD), velocity_noise_std=(VEL_STD, VEL_STD),
                          effort_noise_std=(EFF_STD, EFF_STD), drop_probability=(drop, drop),
                          observation_latency=(latency, latency))
    dynamics = DynamicsRanges(joint_friction=(0.3, 0.3), joint_damping=(0.3, 0.3), payload_mass=(1.0, 1.0))
    return ArmSim(ArmSimConfig(ranges=RandomizationRanges(dynamics=dynamics, sensor=sensor)), seed=seed)


def kf_only(latency: float = 0.0) -> StateEstimator:
    return StateEstimator(config=EstimatorConfig(kalman=SIM_KALMAN, belief_enabled=False, latency=latency))


def rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err**2)))


# ---------------------------------------------------------------------------------- vs the sim
def test_filter_beats_raw_measurements_and_finite_differences():
    trace = run_against_sim(noisy_sim(), kf_only(), duration=6.0)
    settle = trace.stamp > 0.5
    vel_rmse = rmse((trace.velocity - trace.true_velocity)[settle])
    fd, fd_truth = trace.finite_difference_velocity()
    fd_rmse = rmse((fd - fd_truth)[settle[1:]])
    pos_rmse = rmse((trace.position - trace.true_position)[settle])
    assert vel_rmse * 3 <= fd_rmse, (vel_rmse, fd_rmse)
    assert pos_rmse < POS_STD, pos_rmse
    # and better than the raw velocity measurement too
    assert vel_rmse < rmse((trace.raw_velocity - trace.true_velocity)[settle])


def test_drops_and_outliers_no_divergence_and_honest_3_sigma():
    est = kf_only()
    sim = noisy_sim(drop=0.3)
    trace = run_against_sim(sim, est, duration=10.0, excitation=ExcitationTrajectory(sim.robot, FAST, seed=2),
                            outlier_rate=0.05, rng=np.random.default_rng(11))
    settle = trace.stamp > 0.5
    counts = est.counts()
    n_samples = len(trace.stamp)
    assert 0.6 * 10000 < n_samples < 0.8 * 10000  # about 30 % dropped
    # the injected spikes (20-200 sigma) are all caught, and little else is
    assert counts["outliers"] >= trace.outlier.sum()
    assert counts["outliers"] <= trace.outlier.sum() + 0.005 * n_samples * N
    assert counts["reinitialized_joints"] == 0
    pos_err = np.abs(trace.position - trace.true_position)[settle]
    vel_err = np.abs(trace.velocity - trace.true_velocity)[settle]
    assert np.all(np.isfinite(pos_err)) and pos_err.max() < 20 * POS_STD  # no divergence
    assert vel_err.max() < 20 * VEL_STD
    inside_pos = (pos_err <= 3 * trace.position_std[settle]).mean(axis=0)
    inside_vel = (vel_err <= 3 * trace.velocity_std[settle]).mean(axis=0)
    assert np.all(inside_pos >= 0.99), inside_pos
    assert np.all(inside_vel >= 0.99), inside_vel


def test_torque_fed_acceleration_improves_the_estimate_once_the_model_is_identified():
    """Option ``torque_acceleration``: effort -> forward dynamics with the belief -> acceleration."""
    def run(on: bool):
        sim = noisy_sim(seed=5)
        cfg = EstimatorConfig(kalman=SIM_KALMAN, belief=BeliefConfig(effort_delay=0.001), torque_acceleration=on,
                              torque_acceleration_warmup=50)
        est = StateEstimator(robot=sim.robot, config=cfg)
        trace = run_against_sim(sim, est, 14.0, ExcitationTrajectory(sim.robot, FAST, seed=5))
        late = trace.stamp > 9.0
        acc, acc_est = trace.true_acceleration()
        acc_rmse = np.sqrt(np.mean((acc - acc_est)[late[1:]] ** 2, axis=0))
        vel_rmse = np.sqrt(np.mean((trace.velocity - trace.true_velocity)[late] ** 2, axis=0))
        inside = (np.abs(trace.velocity - trace.true_velocity) <= 3 * trace.velocity_std)[late].mean(axis=0)
        return acc_rmse, vel_rmse, inside, est.counts()

    acc_off, vel_off, _, _ = run(False)
    acc_on, vel_on, inside, counts = run(True)
    assert np.all(acc_on[:4] < 0.5 * acc_off[:4]), (acc_on, acc_off)  # the heavy joints: large gains
    assert np.all(acc_on[:4] < 1.1 * acc_off[:4]), (acc_on, acc_off)  # and no heavy joint gets worse
    # the wrist: with the damping the torque limits allow (D v_max <= tau_max, 4 N m s/rad instead of
    # 15-30) its light links gain nothing from the torque model (measured 2.23-2.42 vs 1.96-1.98 rad/s^2
    # off): bounded here, a known limit of the model-based term (issue 9 note)
    assert np.all(acc_on[4:] < 1.3 * acc_off[4:]), (acc_on, acc_off)
    assert np.all(vel_on[:4] < 0.8 * vel_off[:4]), (vel_on, vel_off)
    assert np.all(inside >= 0.99), inside
    assert counts["reinitialized_joints"] == 0


def test_prediction_to_time_of_use_compensates_latency():
    latency = 0.01
    trace = run_against_sim(noisy_sim(latency=latency), kf_only(), duration=4.0)
    settle = trace.stamp > 0.5
    predicted, stale = trace.now_error[settle], trace.stale_error[settle]
    assert rmse(predicted) < 0.5 * rmse(stale), (rmse(predicted), rmse(stale))


# ---------------------------------------------------------------------------------- stream faults
def ramp(t: float) -> tuple[np.ndarray, np.ndarray]:
    return np.full(N, 0.1 + 0.5 * t), np.full(N, 0.5)


def fed(kf: JointKalmanFilter, times) -> None:
    for t in times:
        q, dq = ramp(t)
        kf.update(t, q, dq, np.zeros(N))


def test_duplicate_and_out_of_order_samples_are_dropped_and_counted():
    kf = JointKalmanFilter(N)
    fed(kf, np.arange(0, 0.1, 0.001))
    x, P, t = kf.x.copy(), kf.P.copy(), kf.t
    q, dq = ramp(t)
    assert kf.update(t, q + 1.0, dq).outcome == "duplicate"
    assert kf.update(t - 0.01, q, dq).outcome == "out_of_order"
    np.testing.assert_array_equal(kf.x, x)
    np.testing.assert_array_equal(kf.P, P)
    assert kf.t == t
    assert kf.counts["duplicate"] == 1 and kf.counts["out_of_order"] == 1


def test_missing_samples_predict_only_and_covariance_grows():
    kf = JointKalmanFilter(N)
    fed(kf, np.arange(0, 0.2, 0.001))
    P0 = kf.P[:, 0, 0].copy()
    growth = [kf.predict(kf.t + dt)[1][:, 0, 0] for dt in (0.005, 0.02, 0.1)]
    assert np.all(growth[0] > P0) and np.all(growth[1] > growth[0]) and np.all(growth[2] > growth[1])
    # after a 50 ms hole the filter picks the ramp up where it should be
    t = kf.t + 0.05
    fed(kf, [t])
    np.testing.assert_allclose(kf.x[:, 0], ramp(t)[0], atol=1e-3)


def test_prediction_never_goes_backwards():
    kf = JointKalmanFilter(N)
    fed(kf, np.arange(0, 0.05, 0.001))
    x, P, _, _ = kf.predict(kf.t - 1.0)
    np.testing.assert_array_equal(x, kf.x)
    np.testing.assert_array_equal(P, kf.P)


def test_stream_restart_and_long_gap_reinitialise():
    kf = JointKalmanFilter(N)
    fed(kf, np.arange(10.0, 10.1, 0.001))
    q = np.full(N, -0.7)
    assert kf.update(1.0, q, np.zeros(N)).outcome == "restart"  # stamps jumped back: a new stream
    np.testing.assert_allclose(kf.x[:, 0], q)
    assert kf.update(1.0 + kf.config.max_gap + 0.1, q + 0.2, np.zeros(N)).outcome == "gap_reset"
    np.testing.assert_allclose(kf.x[:, 0], q + 0.2)
    assert kf.counts["restart"] == 1 and kf.counts["gap_reset"] == 1


def test_a_real_jump_is_followed_after_consecutive_rejections():
    kf = JointKalmanFilter(N, KalmanConfig(max_consecutive_rejects=5))
    fed(kf, np.arange(0, 0.1, 0.001))
    q, dq = ramp(kf.t)
    q[2] += 0.5  # e.g. an encoder re-homed: not an outlier, the world changed
    t = kf.t
    for k in range(1, 7):
        kf.update(t + k * 0.001, q, dq)
    assert kf.counts["reinitialized_joints"] == 1
    assert abs(kf.x[2, 0] - q[2]) < 0.01
    assert abs(kf.x[0, 0] - q[2]) > 0.4  # the other joints never jumped


def test_bad_samples_are_refused_without_changing_the_filter():
    kf = JointKalmanFilter(N)
    fed(kf, np.arange(0, 0.05, 0.001))
    x = kf.x.copy()
    q, dq = ramp(0.06)
    q[1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        kf.update(0.06, q, dq)
    with pytest.raises(ValueError, match="7 values"):
        kf.update(0.06, np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        kf.update(float("inf"), np.zeros(N))
    np.testing.assert_array_equal(kf.x, x)


def test_position_only_stream_still_estimates_velocity():
    kf = JointKalmanFilter(N)
    rng = np.random.default_rng(0)
    err = []
    for t in np.arange(0, 3.0, 0.001):
        kf.update(t, np.full(N, np.sin(t)) + rng.normal(0, POS_STD, N))
        if t > 1.0:
            err.append(kf.x[:, 1] - np.cos(t))
    # far better than differencing (0.7 rad/s rms at this noise), without any velocity sensor
    assert rmse(np.array(err)) < 0.05


@pytest.mark.parametrize("key,value", [("position_noise_std", 0.0), ("jerk_psd", -1.0),
                                       ("gate_probability", 1.0), ("max_gap", float("nan"))])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        KalmanConfig(**{key: value})
    with pytest.raises(ValueError, match="unknown key"):
        KalmanConfig.from_dict({"jerk": 1.0})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.02, 0.03), st.floats(-1.0, 1.0), st.booleans()), min_size=1, max_size=80))
def test_any_timestamp_sequence_keeps_the_filter_sane(steps):
    """Jittered, duplicated, reordered and jumping stamps: never NaN, never a negative variance."""
    kf = JointKalmanFilter(N)
    t = 0.0
    for dt, value, with_velocity in steps:
        t = t + dt
        kf.update(t, np.full(N, value), np.full(N, value) if with_velocity else None, np.full(N, value))
        assert np.all(np.isfinite(kf.x)) and np.all(np.isfinite(kf.P))
        assert np.all(np.diagonal(kf.P, axis1=1, axis2=2) >= 0)
        assert np.all(kf.tau_var >= 0)
        assert kf.t is not None and np.isfinite(kf.t)


def test_covariance_layout():
    est = kf_only()
    est.process(0.0, np.zeros(N), np.zeros(N), np.zeros(N))
    e = est.estimate(0.01)
    v = covariance_vector(e).reshape(N, 5)
    np.testing.assert_allclose(v[:, 0], e.position_std**2)
    np.testing.assert_allclose(v[:, 2], e.velocity_std**2)
    np.testing.assert_allclose(v[:, 4], e.effort_variance)


def test_unobservable_position_bias_is_reported_not_hidden():
    cfg = EstimatorConfig(kalman=KalmanConfig(velocity_delay=0.0005, position_bias_std=1e-3), belief_enabled=False)
    est, plain = StateEstimator(config=cfg), kf_only()
    for e in (est, plain):
        for t in np.arange(0, 0.1, 0.001):
            e.process(t, np.zeros(N), np.zeros(N))
    np.testing.assert_allclose(est.estimate().covariance[:, 0, 0],
                               plain.estimate().covariance[:, 0, 0] + 1e-6, rtol=1e-9)
    np.testing.assert_array_equal(est.estimate().position, plain.estimate().position)
