"""Hostile bundle manifests (issue 9, defect 9): each is a BundleError naming the key or line,
and `simreal policy check` prints it as one FAIL line with exit status 1, never a traceback.

Runs on copies of the shipped ONNX bundle; no torch needed."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from simreal_ros.policy.bundle import MANIFEST_FILE, BundleError, PolicyManifest, load_bundle, read_manifest
from simreal_ros.resources import resource
from simreal_ros.robot import load_robot

SHIPPED = resource("policies", "reach_default")


@pytest.fixture(scope="module")
def robot():
    return load_robot()


@pytest.fixture
def bundle(tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(SHIPPED, dst)
    return dst


def edit(bundle_dir, fn):
    path = bundle_dir / MANIFEST_FILE
    d = yaml.safe_load(path.read_text())
    fn(d)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return bundle_dir


def shipped_text() -> str:
    return (SHIPPED / MANIFEST_FILE).read_text()


def policy_check(path, capsys) -> tuple[int, str]:
    from simreal_ros.cli import main

    rc = main(["policy", "check", str(path), "--samples", "20"])
    return rc, capsys.readouterr().out


def assert_check_fails(path, capsys, *needles: str) -> str:
    """`simreal policy check` exits 1 with a FAIL line containing every needle."""
    rc, out = policy_check(path, capsys)
    fails = [ln for ln in out.splitlines() if ln.startswith("  FAIL")]
    assert rc == 1 and fails, out[:2000]
    assert any(all(n in ln for n in needles) for ln in fails), fails
    assert "Traceback" not in out
    return out


# ---------------------------------------------------------------------- the model stays inside the bundle
def test_absolute_model_path_is_refused(bundle, robot, capsys):
    edit(bundle, lambda d: d["model"].update(file=str(SHIPPED / "policy.onnx")))
    with pytest.raises(BundleError, match=r"manifest key 'model.file': '/.*policy.onnx' is an absolute path"):
        load_bundle(bundle, robot)
    assert_check_fails(bundle, capsys, "model.file", "absolute path")


def test_model_path_through_dotdot_is_refused(bundle, robot, tmp_path, capsys):
    shutil.copy(SHIPPED / "policy.onnx", tmp_path / "outside.onnx")
    edit(bundle, lambda d: d["model"].update(file="../outside.onnx"))
    with pytest.raises(BundleError, match=r"manifest key 'model.file': '../outside.onnx' leads out of the bundle"):
        load_bundle(bundle, robot)
    assert_check_fails(bundle, capsys, "model.file", "'../outside.onnx'")


def test_model_symlink_leading_outside_is_refused(bundle, robot, tmp_path, capsys):
    outside = tmp_path / "elsewhere" / "policy.onnx"
    outside.parent.mkdir()
    shutil.copy(SHIPPED / "policy.onnx", outside)
    (bundle / "policy.onnx").unlink()
    os.symlink(outside, bundle / "policy.onnx")
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle, robot)
    assert "manifest key 'model.file': 'policy.onnx' resolves to" in str(exc.value)
    assert str(outside.resolve()) in str(exc.value) and "outside the bundle directory" in str(exc.value)
    assert_check_fails(bundle, capsys, "model.file", "outside the bundle directory")


def test_symlink_inside_the_bundle_is_fine(bundle, robot):
    os.rename(bundle / "policy.onnx", bundle / "real.onnx")
    os.symlink("real.onnx", bundle / "policy.onnx")
    assert load_bundle(bundle, robot).backend.name == "onnx"


# ---------------------------------------------------------------------- robot name
def test_robot_name_must_be_the_robots(bundle, robot, capsys):
    edit(bundle, lambda d: d["robot"].update(name="fr3"))
    with pytest.raises(BundleError) as exc:
        load_bundle(bundle, robot)
    assert "manifest key 'robot.name'" in str(exc.value) and "'fr3'" in str(exc.value) and "'panda'" in str(exc.value)
    assert_check_fails(bundle, capsys, "robot.name", "'fr3'", "'panda'")


# ---------------------------------------------------------------------- types and sizes
@pytest.mark.parametrize("key, mutate, text", [
    ("observation.terms[0].size", lambda d: d["observation"]["terms"][0].update(size=10**12),
     "has size 1000000000000 in the manifest but 7 for 7 joints"),
    ("provenance", lambda d: d.update(provenance=["trained", "by", "me"]), "must be a mapping"),
    ("observation.terms[0].name", lambda d: d["observation"]["terms"][0].update(name=["joint_pos"]),
     "unknown term ['joint_pos']"),
    ("robot.name", lambda d: d["robot"].update(name=["panda"]), "must be a non-empty string"),
    ("model.file", lambda d: d["model"].update(file={"path": "policy.onnx"}), "must be a non-empty string"),
    ("observation.normalization.mean[3]", lambda d: d["observation"]["normalization"]["mean"].__setitem__(3, "0.5"),
     "expected a number, got '0.5'"),
    ("default_pose[0]", lambda d: d["default_pose"].__setitem__(0, True), "expected a number, got True"),
    ("observation.terms[6].name", lambda d: d["observation"]["terms"].append({"name": "joint_pos", "size": 7}),
     "listed twice"),
    ("control_rate_hz", lambda d: d.update(control_rate_hz=1e9), "must be <= 1000"),
])
def test_bad_types_and_sizes_are_clear_errors(bundle, robot, capsys, key, mutate, text):
    edit(bundle, mutate)
    with pytest.raises(BundleError) as exc:
        read_manifest(bundle)
    assert f"manifest key '{key}'" in str(exc.value) and text in str(exc.value)
    assert_check_fails(bundle, capsys, f"manifest key '{key}'", text)


def test_normalisation_lengths_are_checked_before_conversion(robot):
    d = yaml.safe_load(shipped_text())
    d["observation"]["normalization"]["mean"] = [0.0] * 2_000_000
    with pytest.raises(BundleError, match=r"'observation.normalization.mean': has 2000000 values, expected 30"):
        PolicyManifest.from_dict(d)
    d["observation"]["normalization"]["mean"] = [[0.0] * 30]
    with pytest.raises(BundleError, match=r"'observation.normalization.mean': has 1 values, expected 30"):
        PolicyManifest.from_dict(d)


def test_a_huge_mean_list_in_the_file_is_refused_by_size(bundle, capsys):
    edit(bundle, lambda d: d["observation"]["normalization"].update(mean=[0.0] * 200_000))
    with pytest.raises(BundleError, match=r"larger than 262144 bytes"):
        read_manifest(bundle)
    assert_check_fails(bundle, capsys, "larger than 262144 bytes")


# ---------------------------------------------------------------------- YAML structure
def bomb(levels: int) -> str:
    """A billion-laughs provenance: each level nine aliases of the one before."""
    lines = ['provenance:', '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return shipped_text().split("provenance:")[0] + "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_and_nothing_large_is_printed(bundle, capsys):
    (bundle / MANIFEST_FILE).write_text(bomb(5))  # 9**5 = 59049 strings once expanded
    with pytest.raises(BundleError, match=r"line \d+: YAML anchor '&l0' is not allowed"):
        read_manifest(bundle)
    out = assert_check_fails(bundle, capsys, "YAML anchor '&l0' is not allowed")
    assert len(out) < 2000


def test_yaml_aliases_are_refused_even_without_a_bomb(bundle):
    text = shipped_text().replace("default_pose:\n", "default_pose: &pose\n").rstrip() + "\n  again: *pose\n"
    (bundle / MANIFEST_FILE).write_text(text)
    with pytest.raises(BundleError, match=r"anchor '&pose' is not allowed"):
        read_manifest(bundle)


def test_deep_nesting_and_long_values_are_refused(bundle, capsys):
    head = shipped_text().split("provenance:")[0]
    (bundle / MANIFEST_FILE).write_text(head + "provenance: {notes: " + "[" * 3000 + "]" * 3000 + "}\n")
    with pytest.raises(BundleError, match=r"nested more than 24 levels deep"):
        read_manifest(bundle)
    assert_check_fails(bundle, capsys, "nested more than 24 levels deep")
    (bundle / MANIFEST_FILE).write_text(head + "provenance: {notes: '" + "x" * 100_000 + "'}\n")
    with pytest.raises(BundleError, match=r"a value of 100000 characters; at most 4096"):
        read_manifest(bundle)


def test_many_small_nodes_are_refused(bundle):
    head = shipped_text().split("provenance:")[0]
    (bundle / MANIFEST_FILE).write_text(head + "provenance: {notes: [" + ",".join(["0"] * 30_000) + "]}\n")
    with pytest.raises(BundleError, match=r"more than 20000 YAML nodes"):
        read_manifest(bundle)


def test_duplicate_keys_are_refused(bundle, capsys):
    (bundle / MANIFEST_FILE).write_text(shipped_text() + "action: {type: joint_position_delta, scale: 1000.0}\n")
    with pytest.raises(BundleError, match=r"key 'action' appears twice"):
        read_manifest(bundle)
    assert_check_fails(bundle, capsys, "key 'action' appears twice")


def test_unsafe_tags_and_binary_files_are_refused(bundle, capsys):
    (bundle / MANIFEST_FILE).write_text(shipped_text() + "x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(BundleError, match=r"not valid YAML"):
        read_manifest(bundle)
    (bundle / MANIFEST_FILE).write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(BundleError, match=r"not (UTF-8 text|valid YAML)"):
        read_manifest(bundle)
    rc, out = policy_check(bundle, capsys)
    assert rc == 1 and "FAIL  manifest" in out and "Traceback" not in out


def test_provenance_is_printed_bounded(bundle, capsys):

    sections = len(yaml.safe_load((bundle / MANIFEST_FILE).read_text())["provenance"])
    edit(bundle, lambda d: d["provenance"].update(tool="t" * 4000, seed=list(range(1000)),
                                                  **{f"section_{i}": i for i in range(100)}))
    rc, out = policy_check(bundle, capsys)
    line = next(ln for ln in out.splitlines() if "provenance:" in ln)
    assert rc == 0 and len(line) < 1200, len(line)
    assert f"({sections + 100} in all)" in line
