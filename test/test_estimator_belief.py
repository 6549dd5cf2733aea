"""The hidden-parameter belief: friction and payload identified online against the MuJoCo sim's
true (randomized) values, the torque model it rests on, and the RLS underneath."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from simreal_ros.estimator.belief import BeliefConfig, HiddenParameterBelief, RecursiveLeastSquares, parameter_names
from simreal_ros.estimator.dynamics import InverseDynamics
from simreal_ros.estimator.estimator import EstimatorConfig, StateEstimator
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.estimator.kalman import KalmanConfig
from simreal_ros.estimator.simrun import run_against_sim
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import DynamicsRanges, RandomizationRanges, SensorRanges

N = 7
#: The standard excitation used for identification tests (and in the README numbers).
EXCITATION = ExcitationConfig(base_frequency=0.3, amplitude=0.6, limit_fraction=0.5)
#: The sim's effort is the actuator force of the step that produced the state: one physics step older.
SIM_BELIEF = BeliefConfig(effort_delay=0.001)


def randomized_sim(seed: int, drop: float = 0.0, noise: bool = True) -> ArmSim:
    """Friction, damping and payload randomized (bounded away from 0 so that 10 % means something)."""
    dynamics = DynamicsRanges(joint_friction=(0.2, 0.5), joint_damping=(0.3, 0.5), payload_mass=(0.5, 1.5))
    sensor = SensorRanges(position_noise_std=(5e-4, 5e-4), velocity_noise_std=(0.01, 0.01),
                          effort_noise_std=(0.2, 0.2), drop_probability=(drop, drop)) if noise else SensorRanges()
    return ArmSim(ArmSimConfig(ranges=RandomizationRanges(dynamics=dynamics, sensor=sensor)), seed=seed)


def identify(seed: int, duration: float, drop: float = 0.0, checkpoints=(10.0, 30.0)):
    sim = randomized_sim(seed, drop)
    est = StateEstimator(robot=sim.robot, config=EstimatorConfig(kalman=KalmanConfig(velocity_delay=0.0005),
                                                                 belief=SIM_BELIEF))
    trace = run_against_sim(sim, est, duration, ExcitationTrajectory(sim.robot, EXCITATION, seed=seed),
                            checkpoints=(*checkpoints, duration))
    return sim, est, trace


def check_convergence(sim: ArmSim, trace, duration: float) -> None:
    assert trace.contacts == 0  # the excitation never touches the table
    # Joints whose MuJoCo frictionloss really acts as Coulomb friction while moving (ground truth):
    # joint 7 (~1e-3 kg m^2) stays in the soft constraint's linear zone, so it is not identifiable.
    coulomb_joints = np.flatnonzero(trace.coulomb_saturation >= 0.95)
    assert len(coulomb_joints) >= 6, trace.coulomb_saturation
    final = trace.beliefs[duration]
    draw = sim.draw
    rel = {
        "viscous": (final.viscous - draw.joint_damping)[coulomb_joints] / draw.joint_damping[coulomb_joints],
        "coulomb": (final.coulomb - draw.joint_friction)[coulomb_joints] / draw.joint_friction[coulomb_joints],
        "payload": np.array([(final.payload - draw.payload_mass) / draw.payload_mass]),
    }
    for name, err in rel.items():
        assert np.all(np.abs(err) <= 0.10), (name, err.round(3))
    # uncertainty shrinks while converging, for every parameter that is checked
    idx = np.concatenate([coulomb_joints, N + coulomb_joints, [2 * N]])
    stds = [trace.beliefs[t].std[idx] for t in sorted(trace.beliefs)]
    for earlier, later in zip(stds, stds[1:]):
        assert np.all(later < earlier)
    prior = HiddenParameterBelief(sim_dynamics(), SIM_BELIEF).state().std[idx]
    assert np.all(stds[-1] < 0.02 * prior)
    # and is honest: the true values lie within a few reported standard deviations
    truth = np.concatenate([draw.joint_damping, draw.joint_friction, [draw.payload_mass]])[idx]
    assert np.all(np.abs(final.values[idx] - truth) <= 4 * final.std[idx])


_DYN = None


def sim_dynamics() -> InverseDynamics:
    global _DYN
    if _DYN is None:
        _DYN = InverseDynamics()
    return _DYN


def test_friction_and_payload_converge_within_10_percent_with_shrinking_uncertainty():
    duration = 60.0
    sim, est, trace = identify(seed=4, duration=duration)
    check_convergence(sim, trace, duration)
    assert est.counts()["belief_updates"] > 0.9 * duration / SIM_BELIEF.update_period


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 6, 7, 8])
def test_convergence_other_draws_with_drops(seed):
    duration = 60.0
    sim, _, trace = identify(seed=seed, duration=duration, drop=0.3)
    check_convergence(sim, trace, duration)


def test_torque_model_matches_the_sim():
    """tau_measured = ID_nominal + b dq + fc sign(dq) + m Y_payload, checked on noise-free sim data
    with MuJoCo's own accelerations (the model the belief's regression is built on)."""
    b, fc, m = 0.4, 0.3, 0.8
    ranges = RandomizationRanges(dynamics=DynamicsRanges(joint_friction=(fc, fc), joint_damping=(b, b),
                                                         payload_mass=(m, m)))
    sim = ArmSim(ArmSimConfig(ranges=ranges), seed=1)
    ex = ExcitationTrajectory(sim.robot, EXCITATION, seed=1)
    dyn = sim_dynamics()
    dof = sim.sim.dof_adr
    worst = np.zeros(N)
    for i in range(3000):
        sim.set_command(ex(i * 0.001)[0])
        sim.advance(0.001)
        if i < 1500:
            continue
        d = sim.data
        tau_id, y = dyn(d.qpos[sim.sim.qpos_adr], d.qvel[dof], d.qacc[dof])
        friction = -d.qfrc_constraint[dof]  # what the motors overcome (soft Coulomb, exact here)
        model = tau_id + b * d.qvel[dof] + friction + m * y
        worst = np.maximum(worst, np.abs(d.qfrc_actuator[dof] - model))
        fast = np.abs(d.qvel[dof]) > 0.1
        sat = np.abs(friction[:6][fast[:6]])  # joints 1-6 saturate at the Coulomb value when moving
        np.testing.assert_allclose(sat, fc, rtol=1e-3)
    assert np.all(worst < 0.05), worst


def test_payload_regressor_is_gravity_of_one_kilogram_at_rest():
    dyn = sim_dynamics()
    sim = ArmSim(seed=0)
    q = sim.robot.ready_pose
    _, y = dyn(q, np.zeros(N), np.zeros(N))
    # one kilogram 3 cm beyond the flange: torque = J_p^T (m g) at rest
    jacp = np.zeros((3, sim.model.nv))
    sim.data.qpos[sim.sim.qpos_adr] = q
    mujoco.mj_forward(sim.model, sim.data)
    mujoco.mj_jacBody(sim.model, sim.data, jacp, None, sim.sim.payload_body)
    expected = -jacp[:, sim.sim.dof_adr].T @ (1.0 * sim.model.opt.gravity)
    np.testing.assert_allclose(y, expected, atol=1e-9)


def test_rls_matches_batch_least_squares():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=5)
    rls = RecursiveLeastSquares(np.zeros(5), np.eye(5) * 1e6)
    rows, ys = [], []
    for _ in range(200):
        Phi = rng.normal(size=(3, 5))
        y = Phi @ theta + rng.normal(0, 0.1, 3)
        rls.update(Phi, y, np.full(3, 0.1))
        rows.append(Phi)
        ys.append(y)
    batch = np.linalg.lstsq(np.vstack(rows), np.concatenate(ys), rcond=None)[0]
    np.testing.assert_allclose(rls.theta, batch, atol=1e-6)
    cov = 0.01 * np.linalg.inv(np.vstack(rows).T @ np.vstack(rows))
    np.testing.assert_allclose(rls.P, cov, rtol=1e-4)


def test_drift_keeps_uncertainty_bounded_without_excitation():
    """With the arm at rest nothing is learned, and the covariance grows only at the drift rate."""
    belief = HiddenParameterBelief(sim_dynamics(), BeliefConfig())
    sim = ArmSim(seed=0)
    before = belief.state().std
    for _ in range(2000):
        sim.advance(0.001)
        for m in sim.pop_measurements():
            belief.push(m.stamp, m.position, m.velocity, m.effort)
    after = belief.state()
    np.testing.assert_array_equal(after.values, 0.0)
    assert np.all(after.std <= before + 0.01)


def test_belief_layout_and_names():
    belief = HiddenParameterBelief(sim_dynamics())
    state = belief.state()
    names = parameter_names(sim_dynamics().robot.joint_names)
    assert len(names) == 3 * N + 1 == len(state.values) == len(state.std)
    assert names[0].startswith("viscous_friction/") and names[N].startswith("coulomb_friction/")
    assert names[2 * N] == "payload_mass [kg]" and names[2 * N + 1].startswith("armature/")
    np.testing.assert_array_equal(state.vector(), np.concatenate([state.values, state.std]))
    d = state.as_dict(sim_dynamics().robot.joint_names)
    assert d["payload_mass"] == {"value": 0.0, "std": state.std[2 * N]}
    assert list(d["coulomb_friction"]) == list(sim_dynamics().robot.joint_names)
    assert d["units"]["armature"] == "kg m^2"


@pytest.mark.parametrize("key,value", [("window", 0.0), ("forgetting", 1.5), ("drift_payload", -1.0),
                                       ("effort_delay", 0.2)])
def test_belief_config_errors_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        BeliefConfig(**{key: value})


def test_belief_is_an_optional_observation_term():
    from simreal_ros.policy.observation import ObsInputs, build_observation, term_sizes

    robot = sim_dynamics().robot
    state = HiddenParameterBelief(sim_dynamics()).state()
    assert term_sizes(["belief"], N) == [len(state.vector())]
    x = ObsInputs(q=robot.ready_pose, dq=np.zeros(N), goal=np.zeros(3), last_action=np.zeros(N),
                  belief=state.vector())
    np.testing.assert_array_equal(build_observation(robot, ["belief"], x), state.vector())
    x.belief = None
    with pytest.raises(ValueError, match="belief"):
        build_observation(robot, ["joint_pos", "belief"], x)


def test_config_from_ros_style_dotted_keys_and_errors():
    cfg = EstimatorConfig.from_mapping({"kalman.jerk_psd": 5e3, "belief.window": 0.05, "latency": 0.002,
                                        "belief_enabled": True})
    assert cfg.kalman.jerk_psd == 5e3 and cfg.belief.window == 0.05 and cfg.latency == 0.002
    with pytest.raises(ValueError, match="kalman: unknown key"):
        EstimatorConfig.from_mapping({"kalman.jerk": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        EstimatorConfig.from_mapping({"speed": 1.0})
    with pytest.raises(ValueError, match="torque_acceleration needs belief_enabled"):
        EstimatorConfig.from_mapping({"torque_acceleration": True, "belief_enabled": False})


def test_stream_restart_keeps_what_was_learned():
    """A restarted driver (stamps jump back) re-initialises the filter, not the belief."""
    sim = randomized_sim(seed=9, noise=False)
    est = StateEstimator(robot=sim.robot, config=EstimatorConfig(belief=SIM_BELIEF), dynamics=sim_dynamics())
    ex = ExcitationTrajectory(sim.robot, EXCITATION, seed=9)
    for i in range(4000):
        sim.set_command(ex(i * 0.001)[0])
        sim.advance(0.001)
        for m in sim.pop_measurements():
            est.process(m.stamp, m.position, m.velocity, m.effort)
    learned = est.belief()
    assert learned.updates > 20
    m = sim.pop_measurements() or [sim.true_state()]
    assert est.process(0.0, m[-1].position, m[-1].velocity, m[-1].effort).outcome == "restart"
    after = est.belief()
    np.testing.assert_array_equal(after.values, learned.values)
    assert est.counts()["restart"] == 1
    # and learning goes on in the new stream's time base
    for i in range(1000):
        sim.set_command(ex(4.0 + i * 0.001)[0])
        sim.advance(0.001)
        for m in sim.pop_measurements():
            est.process(m.stamp - 4.0, m.position, m.velocity, m.effort)
    assert est.belief().updates > after.updates + 5
