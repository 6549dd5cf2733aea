"""``simreal estimate``: run the state estimator on the randomized sim and score it against the truth.

Excites the simulated arm along the identification trajectory for ``--seconds``, feeds its
noisy measurements to :class:`StateEstimator` (the settings of ``config/estimator.yaml``),
and prints the filter's errors next to the raw sensor's and the identified friction, payload
and armature next to the values the randomization drew. No ROS needed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from simreal_ros.estimator.estimator import EstimatorConfig, StateEstimator
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.estimator.simrun import run_against_sim
from simreal_ros.resources import resource
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.randomize import load_ranges

#: The standard identification excitation (as in the tests and the README numbers).
STANDARD_EXCITATION = ExcitationConfig(base_frequency=0.3, amplitude=0.6, limit_fraction=0.5)


def load_config(path: str | Path | None = None) -> EstimatorConfig:
    """The core settings from a ``state_estimator: ros__parameters:`` file (default: the package's)."""
    path = Path(path) if path else resource("config", "estimator.yaml")
    data = yaml.safe_load(Path(path).read_text()) or {}
    try:
        params = data["state_estimator"]["ros__parameters"]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: expected 'state_estimator: ros__parameters:'") from None
    keys = ("kalman", "belief", "belief_enabled", "latency", "torque_acceleration", "acceleration_noise_std",
            "torque_acceleration_warmup")
    return EstimatorConfig.from_mapping({k: params[k] for k in keys if k in params})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="excitation duration (s of sim time)")
    parser.add_argument("--profile", default="default", help="randomization profile (config/randomization.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the randomization draw and the trajectory")
    parser.add_argument("--config", default=None, help="estimator parameter file (default: config/estimator.yaml)")
    parser.add_argument("--outliers", type=float, default=0.0, help="share of samples to corrupt with spikes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def run(args: argparse.Namespace) -> int:
    if not (0 < args.seconds <= 3600):
        raise SystemExit(f"--seconds must be in (0, 3600], got {args.seconds}")
    sim = ArmSim(ArmSimConfig(ranges=load_ranges(profile=args.profile)), seed=args.seed)
    est = StateEstimator(robot=sim.robot, config=load_config(args.config))
    trace = run_against_sim(sim, est, args.seconds, ExcitationTrajectory(sim.robot, STANDARD_EXCITATION,
                                                                         seed=args.seed),
                            outlier_rate=args.outliers, rng=np.random.default_rng(args.seed),
                            checkpoints=(args.seconds,))
    settle = trace.stamp > min(1.0, 0.2 * args.seconds)
    fd, fd_truth = trace.finite_difference_velocity()
    inside = (np.abs(trace.position - trace.true_position) <= 3 * trace.position_std)[settle].mean()
    draw = sim.draw
    kd = np.asarray(sim.config.damping) * draw.damping_scale
    belief = trace.beliefs.get(args.seconds)
    out = {
        "position_rmse_rad": _rms((trace.position - trace.true_position)[settle]),
        "raw_position_rmse_rad": _rms((trace.raw_position - trace.true_position)[settle]),
        "velocity_rmse_rad_s": _rms((trace.velocity - trace.true_velocity)[settle]),
        "finite_difference_velocity_rmse_rad_s": _rms((fd - fd_truth)[settle[1:]]),
        "position_within_3_sigma": float(inside),
        "counts": est.counts(),
        "truth": {"viscous_friction": draw.joint_damping.tolist(), "coulomb_friction": draw.joint_friction.tolist(),
                  "payload_mass": float(draw.payload_mass),
                  "armature_incl_kd_dt": (draw.joint_armature + kd * sim.config.physics_dt).tolist()},
        "belief": belief.as_dict(sim.robot.joint_names) if belief else None,
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{args.seconds:g} s of excitation, profile '{args.profile}', seed {args.seed}")
    print(f"position rmse {out['position_rmse_rad']:.2e} rad (raw {out['raw_position_rmse_rad']:.2e}); "
          f"velocity rmse {out['velocity_rmse_rad_s']:.2e} rad/s (finite differences "
          f"{out['finite_difference_velocity_rmse_rad_s']:.2e}); within 3 sigma {inside:.2%}")
    print(f"counts: {out['counts']}")
    if belief is not None:
        print(f"{'joint':<14}{'viscous':>16}{'true':>7}{'coulomb':>16}{'true':>7}{'armature':>18}{'true':>7}")
        n = sim.robot.n_joints
        for i, name in enumerate(sim.robot.joint_names):
            print(f"{name:<14}{belief.viscous[i]:>8.3f} ±{belief.std[i]:<6.3f}{draw.joint_damping[i]:>7.3f}"
                  f"{belief.coulomb[i]:>8.3f} ±{belief.std[n + i]:<6.3f}{draw.joint_friction[i]:>7.3f}"
                  f"{belief.armature[i]:>9.4f} ±{belief.std[2 * n + 1 + i]:<7.4f}"
                  f"{out['truth']['armature_incl_kd_dt'][i]:>7.4f}")
        print(f"payload {belief.payload:.3f} ± {belief.std[2 * n]:.3f} kg (true {draw.payload_mass:.3f})")
    return 0
