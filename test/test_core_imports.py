"""The core modules must work on a machine without ROS: they never import rclpy or messages."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import simreal_ros

ROS_LAYERS = ("simreal_ros.nodes", "simreal_ros.bringup")


def core_modules() -> list[str]:
    mods = []
    for info in pkgutil.walk_packages(simreal_ros.__path__, "simreal_ros."):
        if not info.name.startswith(ROS_LAYERS) and not info.name.endswith("launch"):
            mods.append(info.name)
    return mods


def test_core_modules_import_without_rclpy():
    mods = core_modules()
    assert "simreal_ros.robot.model" in mods and "simreal_ros.sim.arm" in mods
    blocked = ["rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "trajectory_msgs", "diagnostic_msgs",
               "std_srvs", "rosgraph_msgs", "rcl_interfaces", "lifecycle_msgs"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None  # any import of these now raises ImportError\n"
        "import importlib\n"
        f"for mod in {mods!r}: importlib.import_module(mod)\n"
        f"loaded = [m for m in {blocked!r} if sys.modules.get(m) is not None]\n"
        "print('LOADED', loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout
