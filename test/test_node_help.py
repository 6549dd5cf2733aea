"""Every node's console entry point answers --help with a usage line and exit 0, without
starting rclpy (what the colcon check in .ci/run runs on the installed scripts)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

NODES = ["sim_bridge_node", "estimator_node", "policy_node", "baseline_node", "shield_node", "recorder_node",
         "excitation_node", "view_node", "pusher_node"]


@pytest.mark.parametrize("module", NODES)
def test_help_prints_usage_and_exits_without_starting_a_node(module):
    proc = subprocess.run([sys.executable, "-m", f"simreal_ros.nodes.{module}", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: "), proc.stdout
    assert "config/*.yaml" in proc.stdout
    assert "[INFO]" not in proc.stdout + proc.stderr  # no node came up (it would log its configuration)


def test_ros_args_are_not_mistaken_for_help():
    from simreal_ros.nodes.common import help_requested

    assert help_requested(["--help"]) and help_requested(["-h", "--ros-args", "-p", "x:=1"])
    assert not help_requested(["--ros-args", "-p", "mode:=active"])
    assert not help_requested([])
