"""Per-update cost of the state estimator for the 7-joint arm (p50/p99, microseconds).

Samples are recorded first from the MuJoCo sim (noisy, excited, 1 kHz), then replayed
through each variant in the same process so that the numbers compare:

* ``lowpass``: a first-order low-pass on position/velocity/effort in numpy (the cheapest
  thing one could call filtering; the baseline),
* ``kf``: :class:`JointKalmanFilter` update (7 joints, position + velocity + effort, gating),
* ``estimator``: :class:`StateEstimator.process` with the belief (an RLS update with two
  ``mj_inverse`` calls every ``belief.update_period``; those updates are also reported alone),
* ``predict``: :meth:`StateEstimator.estimate` forward to the time of use.

Usage: ``python bench/bench_estimator.py [--seconds 20]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from simreal_ros.estimator.belief import BeliefConfig
from simreal_ros.estimator.estimator import EstimatorConfig, StateEstimator
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.estimator.kalman import JointKalmanFilter, KalmanConfig
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import DynamicsRanges, RandomizationRanges, SensorRanges


def record(seconds: float) -> list:
    sensor = SensorRanges(position_noise_std=(5e-4, 5e-4), velocity_noise_std=(0.01, 0.01),
                          effort_noise_std=(0.2, 0.2))
    dyn = DynamicsRanges(joint_friction=(0.3, 0.3), joint_damping=(0.3, 0.3), payload_mass=(1.0, 1.0))
    sim = ArmSim(ArmSimConfig(ranges=RandomizationRanges(dynamics=dyn, sensor=sensor)), seed=0)
    ex = ExcitationTrajectory(sim.robot, ExcitationConfig(base_frequency=0.3, amplitude=0.6, limit_fraction=0.5))
    out = []
    for i in range(int(seconds * 1000)):
        sim.set_command(ex(i * 0.001)[0])
        sim.advance(0.001)
        out.extend(sim.pop_measurements())
    return out


def timed(fn, samples) -> np.ndarray:
    ns = np.empty(len(samples))
    clock = time.perf_counter_ns
    for i, m in enumerate(samples):
        t0 = clock()
        fn(m)
        ns[i] = clock() - t0
    return ns / 1e3


def pct(us: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="sim seconds of samples (1 kHz)")
    args = parser.parse_args()
    samples = record(args.seconds)
    warm = samples[:500]

    state = {}

    def lowpass(m, a=0.2):
        if not state:
            state.update(q=m.position.copy(), dq=m.velocity.copy(), tau=m.effort.copy())
            return
        state["q"] += a * (m.position - state["q"])
        state["dq"] += a * (m.velocity - state["dq"])
        state["tau"] += a * (m.effort - state["tau"])

    sim_kalman = KalmanConfig(velocity_delay=0.0005)
    kf = JointKalmanFilter(7, sim_kalman)
    est = StateEstimator(config=EstimatorConfig(kalman=sim_kalman, belief=BeliefConfig(effort_delay=0.001)))
    belief_updates: list[float] = []

    def estimator(m):
        est.process(m.stamp, m.position, m.velocity, m.effort)

    results = {}
    for name, fn in (("lowpass", lowpass), ("kf_update", lambda m: kf.update(m.stamp, m.position, m.velocity,
                                                                              m.effort))):
        timed(fn, warm)
        results[name] = pct(timed(fn, samples[500:]))
    timed(estimator, warm)
    before = est.counts()["belief_updates"]
    us = np.empty(len(samples) - 500)
    for i, m in enumerate(samples[500:]):
        n0 = est.counts()["belief_updates"]
        t0 = time.perf_counter_ns()
        est.process(m.stamp, m.position, m.velocity, m.effort)
        us[i] = (time.perf_counter_ns() - t0) / 1e3
        if est.counts()["belief_updates"] > n0:
            belief_updates.append(us[i])
    results["estimator_update"] = pct(us)
    results["belief_rls_update"] = pct(np.array(belief_updates)) if belief_updates else (float("nan"),) * 2
    last = est.last_stamp
    results["predict"] = pct(timed(lambda m: est.estimate(last + 0.005), samples[:5000]))

    out = {}
    for name, (p50, p99) in results.items():
        out[f"{name}_p50_us"] = round(p50, 2)
        out[f"{name}_p99_us"] = round(p99, 2)
    out["belief_rls_updates"] = est.counts()["belief_updates"] - before
    out["samples"] = len(samples) - 500
    out["ratio_kf_vs_lowpass_p50"] = round(results["kf_update"][0] / results["lowpass"][0], 1)
    out["ratio_estimator_vs_lowpass_p50"] = round(results["estimator_update"][0] / results["lowpass"][0], 1)
    for name, (p50, p99) in results.items():
        print(f"{name:20s} p50 {p50:8.1f} us   p99 {p99:8.1f} us")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
