"""`simreal policy check`: a bundle whose actions could command motions beyond the robot's limits
at its control rate fails (issue 9, defect 3), the shield command mode the action type needs
is checked, and the whole check runs on the shipped ONNX bundle without torch."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from simreal_ros.policy.bundle import MANIFEST_FILE
from simreal_ros.resources import resource
from simreal_ros.robot import load_robot

SHIPPED = resource("policies", "reach_default")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def robot():
    return load_robot()


def bundle_with(tmp_path, name="b", **action):
    dst = tmp_path / name
    shutil.copytree(SHIPPED, dst)
    path = dst / MANIFEST_FILE
    d = yaml.safe_load(path.read_text())
    d["action"].pop("max_change", None)  # the velocity checks alone (the filter's row: test_command_reach_numbers)
    d["action"].update(action)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return dst


def check(path, capsys, *extra: str) -> tuple[int, str, list[str]]:
    from simreal_ros.cli import main

    rc = main(["policy", "check", str(path), "--samples", "20", *extra])
    out = capsys.readouterr().out
    return rc, out, [ln for ln in out.splitlines() if ln.startswith("  FAIL")]


def test_shipped_bundle_passes_and_states_what_its_actions_allow(capsys):
    """reach_default: 0.05 rad per 0.05 s period = 1 rad/s, under the 2.175-2.61 rad/s limits."""
    rc, out, fails = check(SHIPPED, capsys)
    assert rc == 0 and not fails, out
    assert ("ok    velocity limits: joint_position_delta scale 0.05 x clip 1 at 20 Hz: a target up to scale*clip = "
            "0.05 rad (at most the joint's range) from the measured position every 0.05 s period, i.e. up to 1 rad/s; "
            "within robot 'panda' velocity limits 2.175-2.61 rad/s (at most 46% of a limit)") in out
    assert "ok    command mode: joint_position_delta commands joint position targets (rad): needs the shield's " \
           "command_mode 'position' (config/shield.yaml: 'position')" in out


def test_action_scale_1000_fails_naming_what_it_allows_and_the_limit(tmp_path, capsys):
    rc, out, fails = check(bundle_with(tmp_path, scale=1000.0), capsys)
    assert rc == 1 and len(fails) == 1, out
    line = fails[0]
    assert line.startswith("  FAIL  velocity limits: joint_position_delta scale 1000 x clip 1 at 20 Hz")
    # a target can jump the whole travel of a joint in one period: panda_joint1's 5.7946 rad in 0.05 s
    assert "panda_joint1 115.9 > 2.175" in line and "panda_joint7 115.9 > 2.61" in line
    assert "robot 'panda' velocity limits are 2.175-2.61 rad/s" in line


def test_just_over_the_velocity_limit_fails_at_that_joint_only(tmp_path, capsys):
    # 0.12 rad per period at 20 Hz = 2.4 rad/s: over 2.175 (joints 1-4), under 2.61 (joints 5-7)
    rc, out, fails = check(bundle_with(tmp_path, scale=0.12), capsys)
    assert rc == 1 and len(fails) == 1, out
    assert "panda_joint4 2.4 > 2.175" in fails[0] and "panda_joint5" not in fails[0]


def test_a_higher_control_rate_is_a_faster_motion(tmp_path, capsys):
    path = bundle_with(tmp_path, scale=0.05)
    d = yaml.safe_load((path / MANIFEST_FILE).read_text())
    d["control_rate_hz"] = 50.0  # 0.05 rad every 20 ms = 2.5 rad/s
    (path / MANIFEST_FILE).write_text(yaml.safe_dump(d))
    rc, out, fails = check(path, capsys)
    assert rc == 1 and "panda_joint1 2.5 > 2.175" in fails[0] and "panda_joint7" not in fails[0]


def test_absolute_position_targets_can_jump_their_whole_range(tmp_path, capsys):
    rc, out, fails = check(bundle_with(tmp_path, type="joint_position", scale=0.2, clip=2.0), capsys)
    assert rc == 1 and len(fails) == 1, out
    assert "targets anywhere in default_pose +- scale*clip = 0.4 rad" in fails[0]
    assert "panda_joint1 16 > 2.175" in fails[0]  # 0.8 rad from one 0.05 s period to the next


def test_torque_bundle_needs_an_effort_mode_shield(tmp_path, capsys):
    path = bundle_with(tmp_path, type="joint_torque", scale=10.0, clip=1.0)
    rc, out, fails = check(path, capsys)  # against the shipped config/shield.yaml: position mode
    assert rc == 1 and len(fails) == 1, out
    assert fails[0].startswith("  FAIL  command mode: joint_torque commands joint torques (N m): needs the shield's "
                               "command_mode 'effort', but config/shield.yaml sets 'position'")
    assert "ok    effort limits" in out and "up to 10 N m; within robot 'panda' effort limits 12-87 N m" in out
    assert "ok    effort_rate limits" in out and "up to 400 N m/s" in out
    rc, out, fails = check(path, capsys, "--command-mode", "effort")
    assert rc == 0 and not fails, out
    assert "needs the shield's command_mode 'effort' (--command-mode: 'effort')" in out
    rc, out, fails = check(SHIPPED, capsys, "--command-mode", "effort")
    assert rc == 1 and "needs the shield's command_mode 'position', but --command-mode sets 'effort'" in fails[0]


def test_torques_beyond_the_effort_and_torque_rate_limits_fail(tmp_path, capsys):
    rc, out, fails = check(bundle_with(tmp_path, type="joint_torque", scale=50.0, clip=2.0), capsys,
                           "--command-mode", "effort")
    assert rc == 1 and len(fails) == 2, out
    assert fails[0].startswith("  FAIL  effort limits:") and "panda_joint5 100 > 12" in fails[0]
    assert "panda_joint1 100 > 87" in fails[0]
    assert fails[1].startswith("  FAIL  effort_rate limits:") and "panda_joint1 3480 > 1000" in fails[1]


def test_command_reach_numbers(robot):
    """The arithmetic behind the FAIL lines, per action type (see simreal_ros.policy.action)."""
    from simreal_ros.policy.action import command_reach

    lim = robot.limits
    (v,) = command_reach(robot, "joint_position_delta", 0.05, 1.0, 20.0, robot.ready_pose)
    np.testing.assert_allclose(v.allowed, 1.0)
    np.testing.assert_array_equal(v.limit, lim.velocity)
    assert v.quantity == "velocity" and len(v.over) == 0
    (v,) = command_reach(robot, "joint_position", 0.1, 1.0, 10.0, robot.ready_pose)
    hi = np.minimum(robot.ready_pose + 0.1, lim.position_max)
    lo = np.maximum(robot.ready_pose - 0.1, lim.position_min)
    np.testing.assert_allclose(v.allowed, (hi - lo) * 10.0)
    e, r = command_reach(robot, "joint_torque", 20.0, 1.0, 20.0, robot.ready_pose)
    np.testing.assert_allclose(e.allowed, 20.0)
    assert list(e.over) == [4, 5, 6]
    np.testing.assert_allclose(r.allowed, 2 * np.minimum(20.0, lim.effort) * 20.0)
    # a declared action filter bounds the commanded acceleration: 0.05 * 0.25 * 20^2 = 5 rad/s^2
    v, a = command_reach(robot, "joint_position_delta", 0.05, 1.0, 20.0, robot.ready_pose, max_change=0.25)
    np.testing.assert_allclose(a.allowed, 5.0)
    assert a.quantity == "acceleration" and len(a.over) == 0
    _, a = command_reach(robot, "joint_position_delta", 0.05, 1.0, 20.0, robot.ready_pose, max_change=0.5)
    assert list(a.over) == [1]  # joint 2's limit is 7.5 rad/s^2, 10 asked


# ---------------------------------------------------------------------- without torch
def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                          env=os.environ.copy(), cwd=TESTS.parent)


def test_policy_check_of_the_shipped_bundle_never_imports_torch():
    code = ("import sys\n"
            "from simreal_ros.cli import main\n"
            f"rc = main(['policy', 'check', {str(SHIPPED)!r}, '--samples', '50'])\n"
            "print('TORCH_IMPORTED', 'torch' in sys.modules)\n"
            "sys.exit(rc)\n")
    res = run_python(code)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "TORCH_IMPORTED False" in res.stdout and "\nPASS\n" in res.stdout


def test_policy_check_passes_with_torch_unimportable():
    code = ("import sys; sys.modules['torch'] = None  # import torch now raises ImportError\n"
            "from simreal_ros.cli import main\n"
            f"sys.exit(main(['policy', 'check', {str(SHIPPED)!r}, '--samples', '50']))\n")
    res = run_python(code)
    assert res.returncode == 0 and res.stdout.strip().endswith("PASS"), res.stdout + res.stderr


def _module_level_importorskips(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:  # statements at module level only
        for call in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if (isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "importorskip"
                    and call.args and isinstance(call.args[0], ast.Constant)):
                found.append(call.args[0].value)
    return found


def test_no_policy_test_module_skips_wholesale_without_torch(tmp_path):
    probe = tmp_path / "test_probe.py"  # the probe sees a module-level skip, and not one inside a test
    probe.write_text("import pytest\ntorch = pytest.importorskip('torch')\n"
                     "def test_x():\n    pytest.importorskip('onnx')\n")
    assert _module_level_importorskips(probe) == ["torch"]
    modules = sorted(TESTS.glob("test_policy_*.py"))
    assert {"test_policy_bundle.py", "test_policy_executor.py", "test_policy_node.py"} <= {p.name for p in modules}
    offenders = {p.name: s for p in modules if (s := _module_level_importorskips(p))}
    assert not offenders, offenders


def test_onnx_policy_tests_pass_with_torch_unimportable():
    """The policy test modules themselves, run with `import torch` failing: only the TorchScript
    tests skip; everything else runs on ONNX Runtime."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import pytest\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', 'test/test_policy_bundle.py',\n"
            "                      'test/test_policy_executor.py', 'test/test_policy_manifest_hostile.py']))\n")
    res = run_python(code)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "3 skipped" in summary and "failed" not in summary, summary
    skips = [ln for ln in res.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(skips) == 1 and skips[0].startswith("SKIPPED [3] test/test_policy_bundle.py"), skips
    assert "TorchScript bundles need torch" in skips[0]
