"""`simreal evaluate` on the shipped bundle: real sim, executor core, baseline core and shield core.

A handful of episodes here (the full evaluation is recorded in the manifest's provenance):
the shipped policy reaches its goals with zero limit violations, nominal and randomized."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simreal_ros.policy.bundle import BundleError, load_bundle
from simreal_ros.robot import load_robot
from simreal_ros.training.evaluate import default_bundle, evaluate


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate(None, episodes=6, seed=20_000, workers=1, out=out, render=False, progress=False), out


def test_shipped_policy_reaches_goals_without_limit_violations(report):
    rep, _ = report
    assert set(rep["conditions"]) == {"nominal", "randomized"}
    for name, cond in rep["conditions"].items():
        for ctl in ("policy", "baseline"):
            agg = cond[ctl]
            assert agg["episodes"] == 6
            assert agg["limit_violations"] == 0, (name, ctl, agg)
            assert agg["success_rate"] >= 5 / 6, (name, ctl, agg)
            assert agg["final_distance_median_m"] < 0.02
        assert cond["policy"]["episodes_reverted"] == 0, cond["policy"]  # the policy itself drove


def test_report_files_json_and_png(report):
    rep, out = report
    data = json.loads((out / "evaluation.json").read_text())
    assert data["conditions"]["randomized"]["randomization"] == "default"
    assert data["conditions"]["nominal"]["policy"]["success_rate"] == rep["conditions"]["nominal"]["policy"][
        "success_rate"]
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifest_records_the_full_evaluation_meeting_the_targets():
    prov = load_bundle(default_bundle(), load_robot(), load_model=False).manifest.provenance
    ev = prov["evaluation"]
    assert ev["episodes"] >= 100 and ev["shield"] is True
    assert ev["nominal"]["policy"]["success_rate"] >= 0.95
    assert ev["randomized"]["policy"]["success_rate"] >= 0.90
    assert ev["nominal"]["policy"]["limit_violations"] == 0 == ev["randomized"]["policy"]["limit_violations"]
    assert prov["command"].startswith("simreal train") and "seed" in prov and prov["training"]["wall_time_s"] > 0


def test_animation_is_rendered_offscreen(tmp_path):
    import imageio.v2 as imageio

    from simreal_ros.training.plots import render_episode

    gif = render_episode(default_bundle(), "nominal", 20_000, tmp_path / "episode.gif")
    assert gif is not None, "offscreen rendering failed (MUJOCO_GL=egl is set by conftest)"
    frames = imageio.mimread(gif)
    assert len(frames) >= 40 and np.asarray(frames[0]).ndim == 3


def test_a_missing_bundle_is_refused_naming_the_path(tmp_path):
    with pytest.raises(BundleError, match="nope"):
        evaluate(tmp_path / "nope", episodes=1, out=None, progress=False)
