"""Policy bundles: manifest validation, refusal of mismatches naming both sides, backends agree.

Everything but the TorchScript tests runs without torch, on the shipped ONNX bundle
(policies/reach_default) or on small linear ONNX models written without torch
(:mod:`simreal_ros.policy.onnx_linear`), because the robot runs ONNX Runtime without torch.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from simreal_ros.policy.bundle import (
    MANIFEST_FILE,
    BundleError,
    PolicyManifest,
    load_bundle,
    manifest_for,
    save_bundle,
)
from simreal_ros.policy.observation import DEFAULT_TERMS
from simreal_ros.policy.onnx_linear import write_linear_bundle, write_linear_onnx
from simreal_ros.resources import resource
from simreal_ros.robot import load_robot

SHIPPED = resource("policies", "reach_default")


@pytest.fixture(scope="module")
def robot():
    return load_robot()


def needs_torch():
    return pytest.importorskip("torch", reason="TorchScript bundles need torch (the 'train' extra)")


def shipped_copy(tmp_path):
    dst = tmp_path / "reach_default"
    shutil.copytree(SHIPPED, dst)
    return dst


def edit_manifest(bundle_dir, fn):
    path = bundle_dir / MANIFEST_FILE
    d = yaml.safe_load(path.read_text())
    fn(d)
    path.write_text(yaml.safe_dump(d, sort_keys=False))


def test_manifest_round_trips_through_yaml(robot):
    m = manifest_for(robot, "p", "policy.onnx", DEFAULT_TERMS, provenance={"seed": np.int64(3)})
    d = yaml.safe_load(yaml.safe_dump(m.to_dict()))
    m2 = PolicyManifest.from_dict(d)
    assert m2.to_dict() == m.to_dict()
    assert m2.obs_dim == 7 + 7 + 3 + 3 + 3 + 7
    assert m2.provenance["seed"] == 3


@pytest.mark.parametrize("key, mutate", [
    ("format", lambda d: d.update(format="other/2")),
    ("model.backend", lambda d: d["model"].update(backend="tensorflow")),
    ("control_rate_hz", lambda d: d.update(control_rate_hz=-5)),
    ("observation.terms[1].name", lambda d: d["observation"]["terms"][1].update(name="joint_acc")),
    ("observation.terms[0].size", lambda d: d["observation"]["terms"][0].update(size=6)),
    ("observation.normalization.std", lambda d: d["observation"]["normalization"]["std"].__setitem__(0, 0.0)),
    ("observation.normalization.mean", lambda d: d["observation"]["normalization"]["mean"].pop()),
    ("action.type", lambda d: d["action"].update(type="cartesian_velocity")),
    ("action.scale", lambda d: d["action"].update(scale="big")),
    ("default_pose", lambda d: d["default_pose"].pop()),
    ("robot.joint_names", lambda d: d["robot"].update(joint_names=["a", "a"])),
    ("action", lambda d: d.pop("action")),
])
def test_bad_manifest_is_refused_naming_the_key(robot, key, mutate):
    d = manifest_for(robot, "p", "policy.onnx", DEFAULT_TERMS).to_dict()
    mutate(d)
    with pytest.raises(BundleError) as exc:
        PolicyManifest.from_dict(d)
    assert f"manifest key '{key}'" in str(exc.value)


def test_shipped_bundle_loads_and_runs_on_onnx_runtime(robot):
    b = load_bundle(SHIPPED, robot)
    assert b.backend.name == "onnx" and b.manifest.robot_name == robot.name == "panda"
    assert (b.manifest.obs_dim, b.manifest.n_joints) == (30, 7)
    y = b.infer(np.zeros((4, 30), dtype=np.float32))
    assert y.shape == (4, 7) and y.dtype == np.float32 and np.all(np.isfinite(y))


def test_save_bundle_writes_a_loadable_bundle(tmp_path, robot):
    m = manifest_for(robot, "saved", "net.onnx", DEFAULT_TERMS, provenance={"seed": 1, "tool": "test"})
    src = write_linear_onnx(tmp_path / "x.onnx", m.obs_dim, robot.n_joints)
    out = save_bundle(tmp_path / "bundle", m, src)
    b = load_bundle(out, robot)
    assert b.manifest.to_dict() == m.to_dict()
    assert (out / "net.onnx").is_file()
    assert "&" not in (out / MANIFEST_FILE).read_text()  # no YAML anchors: the loader refuses them


def test_wrong_joint_order_is_refused_naming_both_sides(tmp_path, robot):
    path = shipped_copy(tmp_path)
    swapped = list(robot.joint_names)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    edit_manifest(path, lambda d: d["robot"].update(joint_names=swapped))
    with pytest.raises(BundleError) as exc:
        load_bundle(path, robot)
    msg = str(exc.value)
    assert str(swapped) in msg and str(list(robot.joint_names)) in msg and "different order" in msg


def test_model_with_wrong_observation_size_is_refused_naming_both_sides(tmp_path, robot):
    path = shipped_copy(tmp_path)  # the shipped model takes 30 values; the manifest now says 23
    edit_manifest(path, lambda d: d["observation"].update(
        terms=d["observation"]["terms"][:-1],
        normalization={k: v[:23] if isinstance(v, list) else v for k, v in d["observation"]["normalization"].items()}))
    with pytest.raises(BundleError) as exc:
        load_bundle(path, robot)
    assert "input 'obs' has shape ['batch' (dynamic), 30] but the manifest's observation size" in str(exc.value)
    assert str(exc.value).endswith("is 23")


def test_model_with_wrong_output_size_is_refused_naming_both_sides(tmp_path, robot):
    path = write_linear_bundle(tmp_path / "b", robot, n_out=6)
    with pytest.raises(BundleError) as exc:
        load_bundle(path, robot)
    assert ("output 'action' has shape ['batch' (dynamic), 6] but the manifest's action size (number of "
            "robot.joint_names; 2 for tool_planar_delta) is 7" in str(exc.value))


def test_missing_model_file_and_missing_bundle_are_clear(tmp_path, robot):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    path = shipped_copy(tmp_path)
    (path / "policy.onnx").unlink()
    with pytest.raises(BundleError, match="model.file 'policy.onnx'"):
        load_bundle(path)


def test_policy_check_command_passes_a_good_bundle_and_fails_a_bad_one(tmp_path, robot, capsys):
    from simreal_ros.cli import main

    assert main(["policy", "check", str(SHIPPED), "--samples", "100"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("PASS") and "FAIL" not in out and "executor cycle p50" in out
    assert "ok    model: input [batch, 30] -> output [batch, 7] (onnx)" in out
    bad = write_linear_bundle(tmp_path / "bad", robot, n_out=6)
    assert main(["policy", "check", str(bad), "--samples", "100"]) == 1
    out = capsys.readouterr().out
    fail = [ln for ln in out.splitlines() if ln.startswith("  FAIL")]
    assert len(fail) == 1 and fail[0].startswith("  FAIL  model: ONNX model ")
    assert "output 'action' has shape ['batch' (dynamic), 6] but the manifest's action size (number of " \
        "robot.joint_names; 2 for tool_planar_delta) is 7" \
        in fail[0]
    assert "ok    model" not in out and out.strip().endswith("FAILED (1 check(s))")


# ---------------------------------------------------------------------- TorchScript (needs torch)
def test_onnx_and_torchscript_agree_within_1e5(tmp_path, robot):
    needs_torch()
    from simreal_ros.policy.export import write_random_bundle

    a = load_bundle(write_random_bundle(tmp_path / "a", robot, "onnx", seed=4), robot)
    b = load_bundle(write_random_bundle(tmp_path / "b", robot, "torchscript", seed=4), robot)
    assert a.backend.name == "onnx" and b.backend.name == "torchscript"
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 3, (256, a.manifest.obs_dim)).astype(np.float32)
    ya, yb = a.infer(obs), b.infer(obs)
    assert ya.shape == (256, robot.n_joints) and ya.dtype == np.float32
    np.testing.assert_allclose(ya, yb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.infer(obs[3]), yb[3], atol=1e-5, rtol=0)  # single observation


def test_torchscript_with_wrong_observation_size_is_refused(tmp_path, robot):
    needs_torch()
    from simreal_ros.policy.export import write_random_bundle

    path = write_random_bundle(tmp_path / "b", robot, backend="torchscript", model_obs_dim=27)
    with pytest.raises(BundleError, match=r"\[1, 30\]"):
        load_bundle(path, robot)


def test_torchscript_bundle_without_torch_says_what_to_do(tmp_path, robot):
    needs_torch()
    from simreal_ros.policy.export import write_random_bundle

    path = write_random_bundle(tmp_path / "b", robot, backend="torchscript")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from simreal_ros.policy.bundle import load_bundle, BundleError\n"
            f"try:\n    load_bundle({str(path)!r})\nexcept BundleError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "torch is not installed" in out.stdout and "backend: onnx" in out.stdout, out.stderr
