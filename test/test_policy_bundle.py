"""Policy bundles: manifest validation, refusal of mismatches naming both sides, backends agree."""

from __future__ import annotations

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
from simreal_ros.robot import load_robot

torch = pytest.importorskip("torch")
from simreal_ros.policy.export import export_onnx, mlp, write_random_bundle  # noqa: E402


@pytest.fixture(scope="module")
def robot():
    return load_robot()


def make_bundle(tmp, robot, backend="onnx", **kw):
    return write_random_bundle(tmp / "bundle", robot, backend, **kw)


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


def test_onnx_and_torchscript_agree_within_1e5(tmp_path, robot):
    a = load_bundle(make_bundle(tmp_path / "a", robot, "onnx", seed=4), robot)
    b = load_bundle(make_bundle(tmp_path / "b", robot, "torchscript", seed=4), robot)
    assert a.backend.name == "onnx" and b.backend.name == "torchscript"
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 3, (256, a.manifest.obs_dim)).astype(np.float32)
    ya, yb = a.infer(obs), b.infer(obs)
    assert ya.shape == (256, robot.n_joints) and ya.dtype == np.float32
    np.testing.assert_allclose(ya, yb, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.infer(obs[3]), yb[3], atol=1e-5, rtol=0)  # single observation


def test_save_bundle_writes_a_loadable_bundle(tmp_path, robot):
    m = manifest_for(robot, "saved", "net.onnx", DEFAULT_TERMS, provenance={"seed": 1, "tool": "test"})
    src = export_onnx(mlp(m.obs_dim, robot.n_joints), m.obs_dim, tmp_path / "x.onnx")
    out = save_bundle(tmp_path / "bundle", m, src)
    b = load_bundle(out, robot)
    assert b.manifest.to_dict() == m.to_dict()
    assert (out / "net.onnx").is_file()


def test_wrong_joint_order_is_refused_naming_both_sides(tmp_path, robot):
    path = make_bundle(tmp_path, robot)
    swapped = list(robot.joint_names)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    edit_manifest(path, lambda d: d["robot"].update(joint_names=swapped))
    with pytest.raises(BundleError) as exc:
        load_bundle(path, robot)
    msg = str(exc.value)
    assert str(swapped) in msg and str(list(robot.joint_names)) in msg and "different order" in msg


def test_model_with_wrong_observation_size_is_refused_naming_both_sides(tmp_path, robot):
    path = make_bundle(tmp_path, robot, model_obs_dim=27)  # manifest says 30
    with pytest.raises(BundleError) as exc:
        load_bundle(path, robot)
    assert "27" in str(exc.value) and "30" in str(exc.value)


def test_model_with_wrong_output_size_is_refused_naming_both_sides(tmp_path, robot):
    path = make_bundle(tmp_path, robot, n_out=6)
    with pytest.raises(BundleError) as exc:
        load_bundle(path, robot)
    assert "6" in str(exc.value) and "7" in str(exc.value) and "joint" in str(exc.value)


def test_torchscript_with_wrong_observation_size_is_refused(tmp_path, robot):
    path = make_bundle(tmp_path, robot, backend="torchscript", model_obs_dim=27)
    with pytest.raises(BundleError, match=r"\[1, 30\]"):
        load_bundle(path, robot)


def test_missing_model_file_and_missing_bundle_are_clear(tmp_path, robot):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    path = make_bundle(tmp_path, robot)
    (path / "policy.onnx").unlink()
    with pytest.raises(BundleError, match="model.file 'policy.onnx'"):
        load_bundle(path)


def test_policy_check_command_passes_a_good_bundle_and_fails_a_bad_one(tmp_path, robot, capsys):
    from simreal_ros.cli import main

    good = make_bundle(tmp_path / "good", robot)
    assert main(["policy", "check", str(good), "--samples", "100"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("PASS") and "FAIL" not in out and "executor cycle p50" in out
    bad = make_bundle(tmp_path / "bad", robot, n_out=6)
    assert main(["policy", "check", str(bad), "--samples", "100"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  model" in out and "[batch, 7]" not in out.split("FAIL  model")[0] and "6" in out


def test_torchscript_bundle_without_torch_says_what_to_do(tmp_path, robot):
    import subprocess
    import sys

    path = make_bundle(tmp_path, robot, backend="torchscript")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from simreal_ros.policy.bundle import load_bundle, BundleError\n"
            f"try:\n    load_bundle({str(path)!r})\nexcept BundleError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "torch is not installed" in out.stdout and "backend: onnx" in out.stdout, out.stderr
