"""simreal loop (issue 13's cycle) on a short run with real parts: graph sessions across processes on
a hidden table, the dataset, the contact calibration, PPO fine-tuning, OPE, the gated rollout and
the evaluation; and the loop's refusals, one line naming the step and the input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("d3rlpy")
pytest.importorskip("minari")

from simreal_ros.finetune.data import bundle_hash  # noqa: E402
from simreal_ros.loop.cycle import main as loop_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PUSH = ROOT / "policies" / "push_default"
ICY = ROOT / "test" / "data" / "hidden_table_icy.yaml"
#: a short loop: one goal per session, a few PPO steps, one evaluation episode per row
SHORT = ["--episodes", "1", "--timesteps", "64", "--value-warmup", "32", "--n-envs", "1", "--fqe-steps", "10",
         "--eval-episodes", "1", "--workers", "1", "--no-progress"]


def _permissive(path: Path) -> Path:
    """Promotion thresholds a one-goal session can meet (the gate's logic is test_rollout's)."""
    path.write_text(yaml.safe_dump({"promotion": {
        "min_shadow_commands": 5, "min_blend_goals": 1, "min_blend_success": 0.0, "max_shadow_divergence": 10.0,
        "max_shadow_intervention_rate": 1.0, "ope_margin": 1e6, "max_replay_intervention_rate": 1.0,
        "max_replay_ood_rate": 1.0}}))
    return path


@pytest.fixture(scope="module")
def short_loop(tmp_path_factory):
    base = tmp_path_factory.mktemp("loop")
    ref = base / "push_default"
    shutil.copytree(PUSH, ref)
    before = bundle_hash(ref)
    out = base / "out"
    rc = loop_main(["--real", str(ICY), "--out", str(out), "--bundle", str(ref),
                    "--promotion-config", str(_permissive(base / "promotion.yaml")), *SHORT])
    return rc, out, ref, before


@pytest.mark.ros
def test_the_loop_runs_every_step_and_writes_one_table(short_loop):
    rc, out, ref, before = short_loop
    assert rc == 0
    assert bundle_hash(ref) == before  # the frozen reference is never written
    rep = json.loads((out / "loop.json").read_text())
    assert rep["reference"]["unchanged"] and rep["reference"]["sha256"] == before
    assert list(rep["steps"]) == ["session", "dataset", "calibrate", "finetune", "ope", "promote", "evaluate"]
    s = rep["steps"]["session"]
    assert s["shield_mode"] == "shadow" and s["goals_attempted"] == 1 and s["limit_violations"] == 0
    assert Path(s["bag"], "metadata.yaml").exists()
    assert rep["steps"]["dataset"]["transitions"] > 0 and rep["steps"]["dataset"]["observation_source"] == \
        "policy_records"
    est = rep["steps"]["calibrate"]["estimates"]
    assert set(est) >= {"table_friction", "puck_mass", "tracker_latency", "tracker_noise_std"}
    assert est["tracker_latency"]["identified"] and est["tracker_latency"]["value"] < 0.02  # this table's is 0
    cal = yaml.safe_load(Path(rep["steps"]["calibrate"]["file"]).read_text())
    assert "contact" in cal["randomization"]
    # the new bundle: PPO from the reference, in the calibrated simulator, promoted through every stage
    from simreal_ros.policy.bundle import read_manifest

    m = read_manifest(out / "policy")[0]
    prov = m.provenance
    assert prov["parent"]["sha256"] == before and prov["finetuning"]["algorithm"] == "PPO"
    assert prov["calibration"]["randomization"] == rep["steps"]["calibrate"]["file"]
    assert prov["datasets"][0]["path"] == str((out / "dataset").resolve())
    assert [d["to"] for d in rep["rollout"]["decisions"]] == ["shadow", "blend", "active"]
    assert all(d["decision"] == "promoted" for d in rep["rollout"]["decisions"])
    assert rep["rollout"]["stage_reached"] == "active" and prov["rollout"]["stage"] == "active"
    for name in ("s2_shadow_new", "s3_blend_new"):  # the evidence the loop produced itself
        assert Path(out, "sessions", name, "metadata.yaml").exists()
    # to shadow on simreal ope's own report: bound to this policy, with the parent's figures beside it
    ev = prov["rollout"]["history"][0]["evidence"][0]
    assert ev["kind"] == "ope" and Path(ev["path"]) == out / "ope.json"
    f = ev["figures"]
    assert f["policy.fqe.ci_low"] <= f["policy.fqe.ci_high"] and "parent.fqe.ci_low" in f
    assert "parent.replay.intervention_rate" in f and f["policy.policy_hash"] == prov["rollout"]["history"][0]["policy_hash"]
    # one table: before, after, the pusher; the policy's own success never above evaluate's count
    rows = rep["table"]
    assert [r[""].split(":")[0] for r in rows] == ["before", "after", "scripted pusher (reference)"]
    for r in rows:
        assert 0 <= r["policy's own success"] <= r["success"] <= 1 and r["limit violations"] == 0
        assert np.isfinite(r["final error median (mm)"])
    md = (out / "loop.md").read_text()
    assert md.count("\n| ") == 4 and "policy's own success" in md
    # how far it got against issue 13's 90 %, in the report and the table's file
    t = rep["target"]
    assert t["target_success"] == 0.9 and t["met"] == (rep["evaluation"]["new"]["success_rate"] >= 0.9)
    assert t["lines"][0].startswith("success ") and "## Against the target" in md and t["lines"][0] in md
    assert (out / "loop.png").stat().st_size > 10_000


def test_a_loop_short_of_its_target_says_how_far_and_what_the_run_shows_about_why():
    from simreal_ros.loop.report import against_target

    agg = {"success_rate": 0.77}
    report = {
        "evaluation": {"new": agg, "parent": {"success_rate": 0.47}, "baseline": {"success_rate": 0.87}},
        "rollout": {"decisions": [{"to": "shadow", "decision": "refused", "criteria": [
            {"name": "FQE lower bound", "value": -5.4, "threshold": ">= -5.5", "passed": True},
            {"name": "replay intervention rate", "value": 0.187, "threshold": "<= 0.1", "passed": False}]}]},
        "finetune": {"training_curve": [{"timesteps": 1000.0 * i, "success_last_50": 0.3 + 0.05 * i}
                                        for i in range(9)]},
        "steps": {"calibrate": {"estimates": {"puck_mass": {"value": 0.34, "std": 0.017, "identified": True}}}},
    }
    t = against_target(report, 0.9)
    assert not t["met"] and t["short_by_points"] == 13.0
    text = "\n".join(t["lines"])
    assert "short by 13 points" in text
    assert "scripted pusher reaches 87 %" in text  # the table is hard for the reference too
    assert "stopped before 'shadow': replay intervention rate: 0.187 (threshold <= 0.1)" in text
    assert "FQE" not in text  # only the failed criterion
    assert "still improving at its budget" in text and t["finetune_late_gain_points"] > 0
    assert "puck_mass 0.34 +- 0.017" in text
    report["evaluation"]["new"] = {"success_rate": 0.93}
    t = against_target(report, 0.9)
    assert t["met"] and t["lines"] == ["success 93 % against the target 90 %: met"]


def _bag_with(path: Path, topic: str, msgtype: str, raw: bytes | None) -> Path:
    from simreal_ros.bag import BagWriter

    with BagWriter(path, status_interval_s=0) as w:
        w.add_topic(topic, msgtype)
        if raw is not None:
            w.write(topic, raw, 1)
    return path


def _refused(capsys, argv: list[str], *needles: str) -> str:
    assert loop_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_bad_arguments_are_refused_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "o"
    base = ["--real", str(ICY), "--out", str(out), "--no-progress"]
    _refused(capsys, [*base, "--episodes", "21"], "--episodes 21", "1 to 20")
    _refused(capsys, [*base, "--task", "reach"], "needs --task push")
    _refused(capsys, [*base, "--bundle", str(ROOT / "policies" / "reach_default")], "is a reach policy")
    _refused(capsys, [*base, "--bundle", str(tmp_path / "none")], "--bundle", "none")
    (tmp_path / "bad.yaml").write_text("table: {table_friction: -1}\n")
    _refused(capsys, ["--real", str(tmp_path / "bad.yaml"), "--out", str(out)], "--real", "bad.yaml")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    _refused(capsys, ["--real", str(ICY), "--out", str(tmp_path / "full")], "not an empty directory")
    assert (tmp_path / "full" / "x").read_text() == "keep" and not out.exists()


def test_an_empty_or_foreign_session_is_refused_by_the_dataset_step_naming_it(tmp_path, capsys):
    empty = _bag_with(tmp_path / "empty", "/joint_states", "sensor_msgs/msg/JointState", None)
    chatter = _bag_with(tmp_path / "chatter", "/chatter", "std_msgs/msg/String",
                        bytes([0, 1, 0, 0, 3, 0, 0, 0, 104, 105, 0, 0]))
    for bag, why in ((empty, "empty bag"), (chatter, "not a recording of this stack")):
        out = tmp_path / f"out_{bag.name}"
        err = _refused(capsys, ["--real", str(ICY), "--out", str(out), "--session", str(bag), "--no-progress"],
                       "simreal loop: error: dataset:", why, str(bag))
        assert "Traceback" not in err and not (out / "dataset").exists() and not (out / "policy").exists()


@pytest.mark.ros
def test_a_session_of_another_bundle_is_refused_naming_it(short_loop, tmp_path, capsys):
    """The loop's own recorded session given with a bundle other than the one that recorded it
    (whose observations and actions need not be the recorded ones). Another robot's session is the
    dataset step's refusal (test_dataset), which the loop passes on as the empty one above."""
    _, done, _, _ = short_loop
    bag = done / "sessions" / "s1_shadow"
    _refused(capsys, ["--real", str(ICY), "--no-progress", "--bundle", str(done / "policy"), "--out",
                      str(tmp_path / "b"), "--session", str(bag)], "dataset:", "recorded with bundle 'push_default'")
