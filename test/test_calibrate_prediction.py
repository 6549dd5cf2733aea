"""Issue 11 acceptance: the same policy evaluated on the calibrated profile predicts its success on
the hidden arm within 5 percentage points, where the nominal model does not.

The "real" arm is test/data/hidden_arm_urdf_links.yaml (3x friction, a 1.5 kg payload, 10 ms
action latency, biased encoders; the URDF's link inertias). A 20 s calibration session is recorded
from it ROS-free (:mod:`simreal_ros.calibrate.simsession`: the excitation through the real shield;
the graph is not the point here, test_calibrate_e2e.py records through it), the fitter sees only
the session, and ``simreal evaluate``'s 'prediction' row compares the shipped reach policy's success
on the calibrated profile and on the nominal model with its success on the hidden arm (same seeds).

Measured 2026-12-02 with the reach policy shipped then, on the URDF with the published identified
inertias (branch lead_inertia; load ~20 on 2 cores; the fit of friction,
damping, payload, latency and bias took 112 s, 50 episodes of the three conditions 244 s): it
succeeds in 72 % of the episodes on the hidden arm, the calibrated profile predicts 72 % (0 points
off), the nominal model 100 % (28 points off); the baseline 100 % everywhere.
This test on main's URDF then (the shape-based inertias, before lead_inertia), 100 episodes, load
~12-15: 449 s; predicted 68 %, actual 66 % (2 points), nominal 100 % (34 points off).
On test/data/hidden_arm.yaml (the same values and other link inertias) a fit without the inertias
(payload 1.11 kg for 1.5) predicted 80 % for 72 %: 8 points off (nominal: 28); the fit of every
parameter did not finish in 40 min at load ~20, so that case is not in the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simreal_ros.training.evaluate import _print_table, prediction

REPO = Path(__file__).resolve().parent.parent
HIDDEN = REPO / "test" / "data" / "hidden_arm_urdf_links.yaml"


def _report(nominal: float, randomized: float, real: float) -> dict:
    cond = lambda name, p: {"randomization": name, **{c: {"success_rate": p} for c in ("policy", "baseline")}}  # noqa
    return {"episodes": 10, "conditions": {"nominal": cond("nominal", nominal),
                                           "randomized": cond("/x/calibration.yaml", randomized),
                                           "real": cond("real:/x/hidden.yaml", real)}}


def test_the_prediction_row_is_predicted_minus_actual_in_points_beside_the_nominal_models(capsys):
    report = _report(1.0, 0.74, 0.7)
    report["prediction"] = pred = prediction(report)
    assert pred["policy"] == {"profile": "/x/calibration.yaml", "predicted": 0.74, "actual": 0.7,
                              "difference_pp": 4.0, "nominal": 1.0, "nominal_difference_pp": 30.0}
    for c in ("policy", "baseline"):  # the table's other rows are not needed for this one
        for cond in report["conditions"].values():
            cond[c].update(dict.fromkeys(("final_distance_median_m", "time_to_target_median_s",
                                          "command_jerk_rms_mean", "shield_interventions_per_episode",
                                          "shield_interventions_per_100_commands", "limit_violations",
                                          "episodes_reverted"), 0))
    _print_table(report)
    out = capsys.readouterr().out
    assert "prediction of the real arm's success (/x/calibration.yaml vs real, same seeds)" in out
    assert "difference (pp)" in out and "+4.0" in out and "+30.0" in out


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_the_calibrated_profile_predicts_the_reach_policys_success_on_the_hidden_arm(tmp_path):
    from simreal_ros.calibrate import FitConfig, fit
    from simreal_ros.calibrate.outputs import write_outputs
    from simreal_ros.calibrate.simsession import record_session
    from simreal_ros.robot import load_robot
    from simreal_ros.sim.arm import ArmSim, ArmSimConfig
    from simreal_ros.sim.real_arm import load_real_arm
    from simreal_ros.training.evaluate import default_bundle, evaluate

    robot = load_robot()
    sim = ArmSim(ArmSimConfig(real_arm=load_real_arm(HIDDEN, robot)), robot=robot, seed=1)
    session = record_session(sim, 20.0, name="hidden_arm")
    config = FitConfig(parameters=("friction", "damping", "payload", "latency", "bias"), max_iters=15, belief=False)
    cal = fit([session], config, robot, progress=False)
    paths = write_outputs(cal, tmp_path / "calibration")
    report = evaluate(default_bundle("reach"), episodes=100, randomization=str(paths["calibration"]), real=HIDDEN,
                      out=None, render=False, progress=False, workers=2)
    pred = report["prediction"]
    print(json.dumps({"fit": cal.stats, "prediction": pred}, indent=1, default=str))
    policy = pred["policy"]
    assert abs(policy["difference_pp"]) <= 5.0, policy
    assert abs(policy["nominal_difference_pp"]) > 5.0, policy  # the gap the calibration closes
