"""The node graph is defined once and used by both the launch file and ``simreal sim``."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import yaml

from simreal_ros.bringup.graph import LAUNCH_ARGS, GraphOptions, build_graph, overrides_yaml

REPO = Path(__file__).resolve().parent.parent


def test_sim_graph_has_every_node_with_its_config_section():
    nodes = build_graph(GraphOptions())
    names = [n.name for n in nodes]
    assert names == ["sim_bridge", "state_estimator", "policy_executor", "baseline_controller", "safety_shield",
                     "recorder"]
    for n in nodes:
        for f in n.param_files:
            data = yaml.safe_load(Path(f).read_text())
            assert n.name in data and "ros__parameters" in data[n.name], f"{f} lacks a section for {n.name}"
    shield = next(n for n in nodes if n.name == "safety_shield")
    assert shield.lifecycle and shield.parameters["mode"] == "active" and shield.parameters["autostart"] is True


def test_real_graph_has_no_sim_bridge_and_remaps_driver_topics(tmp_path):
    driver = tmp_path / "driver.yaml"
    driver.write_text("topics: {joint_states: /franka/joint_states, position_command: /franka/cmd}\n")
    nodes = build_graph(GraphOptions(mode="real", real_driver_config=str(driver), force_stage=True))
    assert "sim_bridge" not in [n.name for n in nodes]
    est = next(n for n in nodes if n.name == "state_estimator")
    shield = next(n for n in nodes if n.name == "safety_shield")
    assert ("/joint_states", "/franka/joint_states") in est.remappings
    assert ("/forward_position_controller/commands", "/franka/cmd") in shield.remappings
    # same config files in both modes
    sim = {n.name: n.param_files for n in build_graph(GraphOptions())}
    for n in nodes:
        assert n.param_files == sim[n.name]


def test_options_shield_mode_policy_record_and_timing():
    nodes = build_graph(GraphOptions(shield_mode="shadow", record=False, timing="unpaced"))
    assert "recorder" not in [n.name for n in nodes]
    assert next(n for n in nodes if n.name == "safety_shield").parameters["mode"] == "shadow"
    assert all(n.parameters["use_sim_time"] for n in nodes)  # unpaced sim publishes /clock
    params = yaml.safe_load(overrides_yaml(nodes))
    assert params["sim_bridge"]["ros__parameters"]["timing"] == "unpaced"


@pytest.mark.parametrize("values,message", [
    ({"mode": "robot"}, "'mode' = 'robot'; allowed: \\['sim', 'real'\\]"),
    ({"shield_mode": "yolo"}, "'shield_mode'"),
    ({"record": "maybe"}, "'record' = 'maybe'"),
    ({"view": "yes"}, "'view' = 'yes'; allowed: true, false"),
    ({"seed": "x"}, "'seed' = 'x'"),
    ({"policy": "/no/such/bundle"}, "no such bundle directory"),
    ({"colour": "red"}, "unknown launch argument"),
])
def test_bad_launch_arguments_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        GraphOptions.from_strings(values)


def test_process_args_carry_files_overrides_and_remaps(tmp_path):
    driver = tmp_path / "driver.yaml"
    driver.write_text("topics: {joint_states: /js, position_command: /cmd}\n")
    spec = next(n for n in build_graph(GraphOptions(mode="real", real_driver_config=str(driver), force_stage=True))
                if n.name == "safety_shield")
    args = spec.ros_args(tmp_path / "o.yaml")
    assert args[:3] == ["--ros-args", "-r", "__node:=safety_shield"]
    assert str(spec.param_files[0]) in args and str(tmp_path / "o.yaml") in args
    assert "/forward_position_controller/commands:=/cmd" in args


class _Recorder:
    """Records the constructor arguments of a launch action (launch is not installable here)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _load_launch_file(monkeypatch, file_name: str = "bringup.launch.py"):
    """Import launch/bringup.launch.py with launch/launch_ros replaced by recording stand-ins.

    ``launch`` and ``launch_ros`` exist only in a full ROS 2 install; this checks the file's
    wiring to the shared graph definition (its only logic), not launch itself.
    """
    made = {}
    launch = types.ModuleType("launch")
    launch.LaunchContext = object
    launch.LaunchDescription = lambda entities: entities
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = lambda function: ("opaque", function)
    subst = types.ModuleType("launch.substitutions")

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    subst.LaunchConfiguration = LaunchConfiguration
    ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorder,), {})
    ros_actions.LifecycleNode = type("LifecycleNode", (_Recorder,), {})
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": subst,
                      "launch_ros": ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    path = REPO / "launch" / file_name
    module = types.ModuleType(file_name.replace(".", "_"))
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    made["module"] = module
    return made


def test_launch_file_declares_every_argument_and_starts_the_graph(monkeypatch):
    module = _load_launch_file(monkeypatch)["module"]
    entities = module.generate_launch_description()
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert set(declared) == {a.name for a in LAUNCH_ARGS}
    assert all(kw["description"] for kw in declared.values())
    _, fn = entities[-1]
    context = {a.name: a.default for a in LAUNCH_ARGS} | {"shield_mode": "shadow"}
    nodes = fn(context)
    expected = build_graph(GraphOptions.from_strings(context))
    assert [n.kwargs["name"] for n in nodes] == [s.name for s in expected]
    for action, spec in zip(nodes, expected):
        assert type(action).__name__ == ("LifecycleNode" if spec.lifecycle else "Node")
        assert action.kwargs["executable"] == spec.executable and action.kwargs["package"] == "simreal_ros"
        assert action.kwargs["parameters"][-1] == spec.parameters
        assert action.kwargs["remappings"] == list(spec.remappings)


def test_launch_file_is_typed_and_thin():
    tree = ast.parse((REPO / "launch" / "bringup.launch.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description")
    assert ast.unparse(fn.returns) == "LaunchDescription"
    assert len((REPO / "launch" / "bringup.launch.py").read_text().splitlines()) < 80


def test_view_adds_the_live_view_node_only_when_asked():
    assert "live_view" not in [n.name for n in build_graph(GraphOptions())]
    nodes = build_graph(GraphOptions.from_strings({"view": "true", "timing": "unpaced"}))
    view = nodes[-1]
    assert view.name == "live_view" and view.module == "simreal_ros.nodes.view_node"
    assert [Path(f).name for f in view.param_files] == ["view.yaml"] and view.parameters["use_sim_time"] is True
    from dataclasses import replace

    from simreal_ros.bringup.graph import view_config
    from simreal_ros.settings import SettingError

    assert (view_config(view).host, view_config(view).port) == ("127.0.0.1", 8765)  # config/view.yaml
    with pytest.raises(SettingError, match="port"):
        view_config(replace(view, parameters={"port": 70000}))


def test_every_console_script_module_exists():
    setup = (REPO / "setup.py").read_text()
    for node in build_graph(GraphOptions(view=True)):
        assert f"{node.executable} = {node.module}:main" in setup


def _bundle_at(tmp_path, rate_hz: float) -> Path:
    """A copy of the shipped bundle whose manifest states ``rate_hz``."""
    import shutil

    bundle = tmp_path / f"bundle_{rate_hz:g}hz"
    shutil.copytree(REPO / "policies" / "reach_default", bundle)
    manifest = bundle / "manifest.yaml"
    text = manifest.read_text()
    assert "control_rate_hz: 20.0\n" in text
    manifest.write_text(text.replace("control_rate_hz: 20.0\n", f"control_rate_hz: {float(rate_hz)}\n"))
    return bundle


def test_the_manifest_rate_reaches_the_shield_and_the_baseline(tmp_path):
    nodes = {n.name: n for n in build_graph(GraphOptions(policy=str(_bundle_at(tmp_path, 25.0))))}
    shield, baseline = nodes["safety_shield"], nodes["baseline_controller"]
    assert shield.parameters.get("control_period") == pytest.approx(0.04)
    assert baseline.parameters.get("rate_hz") == 25.0
    from simreal_ros.bringup.graph import shield_config

    # what the node loads (file + overrides) and what the written override file carries
    cfg = shield_config(shield)
    assert cfg.control_period == pytest.approx(0.04) and cfg.min_step <= cfg.control_period <= cfg.max_step_gap
    assert cfg.command_timeout == pytest.approx(0.1)  # shield.yaml's, already more than two 25 Hz periods
    assert cfg.state_timeout == 0.5  # the sim graph's, not the ShieldConfig default
    params = yaml.safe_load(overrides_yaml(list(nodes.values())))
    assert params["safety_shield"]["ros__parameters"]["control_period"] == pytest.approx(0.04)
    assert params["baseline_controller"]["ros__parameters"]["rate_hz"] == 25.0


def test_a_slow_policy_gets_watchdogs_of_at_least_two_periods(tmp_path):
    nodes = {n.name: n for n in build_graph(GraphOptions(policy=str(_bundle_at(tmp_path, 5.0))))}
    assert nodes["safety_shield"].parameters.get("command_timeout") == pytest.approx(0.4)
    from simreal_ros.bringup.graph import shield_config

    cfg = shield_config(nodes["safety_shield"])
    # at 5 Hz shield.yaml's 0.1 s would stop the arm between every two commands (and a
    # max_step_gap below the period is refused by the shield)
    assert cfg.control_period == pytest.approx(0.2)
    assert cfg.command_timeout == pytest.approx(0.4) and cfg.max_step_gap == pytest.approx(0.4)
    assert nodes["baseline_controller"].parameters["rate_hz"] == 5.0


def test_a_rate_the_shield_cannot_run_is_refused_naming_the_bundle(tmp_path):
    bundle = _bundle_at(tmp_path, 0.5)  # a 2 s period: above the shield's control_period bound
    with pytest.raises(ValueError, match="control_rate_hz 0.5.*control_period"):
        build_graph(GraphOptions(policy=str(bundle)))


def test_real_graph_remaps_exactly_the_nodes_that_use_a_driver_topic(tmp_path):
    driver = tmp_path / "driver.yaml"
    driver.write_text("topics: {joint_states: /franka/joint_states, position_command: /franka/cmd}\n")
    nodes = {n.name: n for n in build_graph(GraphOptions(mode="real", real_driver_config=str(driver), force_stage=True))}
    state = ("/joint_states", "/franka/joint_states")
    cmd = ("/forward_position_controller/commands", "/franka/cmd")
    # the baseline follows the sent command (bumpless take-over): it must hear the driver's topic
    assert set(nodes["baseline_controller"].remappings) == {cmd}
    assert set(nodes["state_estimator"].remappings) == {state}
    assert set(nodes["safety_shield"].remappings) == {cmd}
    assert set(nodes["recorder"].remappings) == {state, cmd}
    assert nodes["policy_executor"].remappings == ()


def test_the_policy_trigger_and_the_executor_are_graph_options_that_reach_the_nodes():
    default = {n.name: n for n in build_graph(GraphOptions())}
    assert default["policy_executor"].parameters["trigger"] == "estimate"
    assert {n.parameters["executor"] for n in default.values()} == {"events"}
    from simreal_ros.bringup.graph import URGENT_NICE

    assert {n.parameters["nice"] for n in default.values()} == {URGENT_NICE} and URGENT_NICE < 0
    old = {n.name: n for n in build_graph(GraphOptions.from_strings({"trigger": "timer",
                                                                     "executor": "single_threaded"}))}
    assert old["policy_executor"].parameters["trigger"] == "timer"
    assert {n.parameters["executor"] for n in old.values()} == {"single_threaded"}
    for name, value in (("trigger", "sometimes"), ("executor", "multi_threaded")):
        with pytest.raises(ValueError, match=f"'{name}' = '{value}'"):
            GraphOptions.from_strings({name: value})
    # the launch argument defaults are the settings' code defaults (declared once)
    from simreal_ros.nodes.spin import SpinConfig
    from simreal_ros.policy.executor import ExecutorConfig

    args = {a.name: a.default for a in LAUNCH_ARGS}
    assert args["trigger"] == ExecutorConfig().trigger and args["executor"] == SpinConfig().executor
