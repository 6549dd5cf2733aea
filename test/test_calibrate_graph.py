"""The calibrate graph is the bringup graph with the excitation controller driving through the
shield: one definition for ``calibrate.launch.py`` and ``simreal calibrate record``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from simreal_ros.bringup.graph import (
    CALIBRATE_ARGS,
    GraphOptions,
    build_calibrate_graph,
    build_graph,
    overrides_yaml,
    shield_config,
)

REPO = Path(__file__).resolve().parent.parent
HIDDEN = REPO / "test" / "data" / "hidden_arm.yaml"


def test_the_excitation_replaces_policy_and_baseline_and_the_shield_keeps_every_check():
    nodes = {n.name: n for n in build_calibrate_graph(GraphOptions())}
    assert list(nodes) == ["sim_bridge", "state_estimator", "excitation_controller", "safety_shield", "recorder"]
    exc, shield, rec = nodes["excitation_controller"], nodes["safety_shield"], nodes["recorder"]
    exc_file = yaml.safe_load(Path(exc.param_files[0]).read_text())["excitation_controller"]["ros__parameters"]
    assert shield.parameters["policy_topic"] == exc_file["command_topic"] == "/simreal/excitation/command"
    assert shield.parameters["mode"] == "active" and shield.parameters["revert_fraction"] == 1.0
    cfg = shield_config(shield)  # the shield runs at the excitation's rate with the bringup watchdogs
    assert cfg.control_period == pytest.approx(1.0 / exc_file["rate_hz"])
    bringup = shield_config(next(n for n in build_graph(GraphOptions()) if n.name == "safety_shield"))
    for key in ("position_margin", "tracking_margin", "command_timeout", "state_timeout", "max_state_speed",
                "implausible_position", "cartesian_box_enabled", "command_mode"):
        assert getattr(cfg, key) == getattr(bringup, key), key
    assert exc.parameters["duration"] == 30.0
    assert "sync_period" not in nodes["sim_bridge"].parameters  # paced: the wall clock, as a robot
    unpaced = {n.name: n for n in build_calibrate_graph(GraphOptions(timing="unpaced"))}
    assert unpaced["sim_bridge"].parameters["sync_period"] == pytest.approx(1.0 / exc_file["rate_hz"])
    assert all(n.parameters["use_sim_time"] for n in unpaced.values())
    assert "/simreal/excitation/command" in rec.parameters["topics"]
    # the excitation starts once the recorder (this node name) records what the fit reads
    assert exc.parameters["recorder"] == rec.name == "recorder"
    assert set(exc_file["recorded_topics"]) <= set(rec.parameters["topics"])
    assert {"/joint_states", "/simreal/shield/sent", "/diagnostics"} <= set(rec.parameters["topics"])
    params = yaml.safe_load(overrides_yaml(list(nodes.values())))
    assert params["excitation_controller"]["ros__parameters"]["duration"] == 30.0


def test_real_mode_remaps_the_driver_and_starts_no_bridge(tmp_path):
    driver = tmp_path / "driver.yaml"
    driver.write_text("topics: {joint_states: /franka/joint_states, position_command: /franka/cmd}\n")
    nodes = {n.name: n for n in build_calibrate_graph(GraphOptions(mode="real", real_driver_config=str(driver)))}
    assert "sim_bridge" not in nodes
    assert set(nodes["state_estimator"].remappings) == {("/joint_states", "/franka/joint_states")}
    assert set(nodes["safety_shield"].remappings) == {("/forward_position_controller/commands", "/franka/cmd")}
    assert ("/joint_states", "/franka/joint_states") in nodes["recorder"].remappings
    # it starts from the command the shield holds (it hears the driver's command topic) once the recorder
    # records the driver's joint states
    assert set(nodes["excitation_controller"].remappings) == {("/forward_position_controller/commands", "/franka/cmd"),
                                                             ("/joint_states", "/franka/joint_states")}


def test_a_hidden_arm_and_a_randomization_file_reach_the_bridge_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    nodes = {n.name: n for n in build_calibrate_graph(GraphOptions(real_arm="test/data/hidden_arm.yaml"))}
    assert nodes["sim_bridge"].parameters["real_arm"] == str(HIDDEN)
    ranges = tmp_path / "ranges.yaml"  # a profile file (h11a makes a calibration.yaml one too)
    ranges.write_text((REPO / "config" / "randomization.yaml").read_text())
    try:
        nodes = build_graph(GraphOptions(randomization=str(ranges)))
    except ValueError as exc:  # the loader does not take files yet: the error names the argument
        assert "launch argument 'randomization'" in str(exc)
    else:
        assert next(n for n in nodes if n.name == "sim_bridge").parameters["randomization_profile"] == str(ranges)


@pytest.mark.parametrize("values,message", [
    ({"duration": "long"}, "'duration' = 'long'; allowed: a number"),
    ({"duration": "1"}, "duration 1 s must be 0 .endless. or at least two ramps"),
    ({"duration": "-5"}, "'duration' = -5.0"),
    ({"real_arm": "/no/such.yaml"}, "'real_arm' = '/no/such.yaml': no such hidden real arm file"),
    ({"randomization": "/no/such.yaml"}, "'randomization' = '/no/such.yaml': no such randomization profile file"),
    ({"randomization": "windy"}, "'randomization' = 'windy': .*no randomization profile 'windy'"),
    ({"real_arm": str(HIDDEN), "randomization": "default"}, "cannot be combined with randomization 'default'"),
    ({"real_arm": str(HIDDEN), "mode": "real"}, "'real_arm' is for mode:=sim"),
])
def test_bad_calibrate_arguments_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        build_calibrate_graph(GraphOptions.from_strings(values))


def test_a_bad_hidden_arm_file_is_refused_before_anything_starts(tmp_path):
    bad = tmp_path / "real.yaml"
    bad.write_text("arm: {payload_mass: -1}\n")
    with pytest.raises(ValueError, match="arm.payload_mass = -1"):
        build_calibrate_graph(GraphOptions(real_arm=str(bad)))


def test_calibrate_launch_file_declares_its_arguments_and_starts_the_graph(monkeypatch):
    from test_graph import _load_launch_file

    module = _load_launch_file(monkeypatch, "calibrate.launch.py")["module"]
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert set(declared) == {a.name for a in CALIBRATE_ARGS} and all(kw["description"] for kw in declared.values())
    _, fn = entities[-1]
    context = {a.name: a.default for a in CALIBRATE_ARGS} | {"duration": "12"}
    actions = fn(context)
    expected = build_calibrate_graph(GraphOptions.from_strings(context))
    assert [a.kwargs["name"] for a in actions] == [s.name for s in expected]
    for action, spec in zip(actions, expected):
        assert type(action).__name__ == ("LifecycleNode" if spec.lifecycle else "Node")
        assert action.kwargs["executable"] == spec.executable
        assert action.kwargs["parameters"][-1] == spec.parameters
    assert next(a for a in actions if a.kwargs["name"] == "excitation_controller").kwargs["parameters"][-1][
        "duration"] == 12.0
    tree = ast.parse((REPO / "launch" / "calibrate.launch.py").read_text())
    fn_def = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description")
    assert ast.unparse(fn_def.returns) == "LaunchDescription"


def test_every_calibrate_node_has_a_console_script():
    setup = (REPO / "setup.py").read_text()
    for node in build_calibrate_graph(GraphOptions()):
        assert f"{node.executable} = {node.module}:main" in setup
