"""One default per sim setting: the arm, the sim bridge's driver and the training env share the
timing defaults, and config/sim_bridge.yaml (which says it shows the defaults) shows the node's.

The node module is imported for its parameter SPEC only (no rclpy.init, no DDS traffic).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from simreal_ros.sim.arm import ArmSimConfig
from simreal_ros.sim.driver import DriverConfig
from simreal_ros.sim.env import ReachEnv

CONFIG = Path(__file__).resolve().parent.parent / "config" / "sim_bridge.yaml"


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_arm_driver_and_env_share_one_default_per_setting():
    arm, drv = ArmSimConfig(), DriverConfig()
    env = {k: p.default for k, p in inspect.signature(ReachEnv.__init__).parameters.items()}
    for name in ("physics_dt", "measurement_period"):
        assert getattr(arm, name) == getattr(drv, name) == env[name], name
    assert arm.command_mode == drv.command_mode
    # and the env really runs with them
    e = ReachEnv()
    assert (e.arm.config.physics_dt, e.arm.config.measurement_period) == (arm.physics_dt, arm.measurement_period)


def test_sim_bridge_yaml_shows_the_nodes_defaults():
    pytest.importorskip("rclpy")
    from simreal_ros.nodes.sim_bridge_node import NODE_NAME, SPEC

    assert "Values shown are the defaults" in CONFIG.read_text().splitlines()[0]
    data = yaml.safe_load(CONFIG.read_text())
    values = _flatten(data[NODE_NAME]["ros__parameters"])
    spec = {p.name: p for p in SPEC}
    assert set(values) == set(spec), (sorted(set(spec) - set(values)), sorted(set(values) - set(spec)))
    differ = {}
    for key, value in values.items():
        default = spec[key].default
        default = list(default) if isinstance(default, tuple) else default
        if value != default or type(value) is not type(default):
            differ[key] = (value, default)
    assert not differ, f"config/sim_bridge.yaml (file, code default) differ: {differ}"


def test_driver_defaults_are_the_node_parameter_defaults():
    pytest.importorskip("rclpy")
    from simreal_ros.nodes.sim_bridge_node import SPEC

    spec = {p.name: p.default for p in SPEC}
    cfg = DriverConfig()
    for name in ("publish_rate_hz", "physics_dt", "measurement_period", "command_mode", "timing", "sync_period",
                 "sync_timeout", "max_catchup", "seed", "goals_seed"):
        assert spec[name] == getattr(cfg, name), name
