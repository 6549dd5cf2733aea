"""``simreal estimate``: the estimator scored against the randomized sim from the command line."""

from __future__ import annotations

import json

import pytest

from simreal_ros.cli import main
from simreal_ros.estimator.cli import load_config


def test_estimate_command_scores_the_filter_and_reports_the_belief(capsys):
    assert main(["estimate", "--seconds", "3", "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["velocity_rmse_rad_s"] < out["finite_difference_velocity_rmse_rad_s"]
    assert out["position_within_3_sigma"] > 0.99
    assert out["counts"]["accepted"] > 2500
    assert set(out["belief"]) >= {"viscous_friction", "coulomb_friction", "payload_mass", "armature", "units"}
    assert len(out["truth"]["viscous_friction"]) == 7


def test_table_output_and_the_shipped_config_loads(capsys):
    assert main(["estimate", "--seconds", "1", "--profile", "nominal"]) == 0
    text = capsys.readouterr().out
    assert "payload" in text and "panda_joint7" in text
    cfg = load_config()
    assert cfg.kalman.velocity_delay == 0.0005 and cfg.belief.effort_delay == 0.001


def test_bad_config_file_is_named(tmp_path):
    bad = tmp_path / "e.yaml"
    bad.write_text("other_node: {}\n")
    with pytest.raises(ValueError, match="state_estimator"):
        load_config(bad)
