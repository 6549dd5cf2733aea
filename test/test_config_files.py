"""Every shipped parameter file is valid for its node, and where it says "Values shown are the
defaults" its values are the code's defaults (declared once in the cores' config classes).

A file is read as ``ros2 run`` / ``ros2 launch`` give it to the node: nested mappings are dotted
parameter names, and each value must have the parameter's ROS type (a float parameter given
``1`` is refused by rclpy, so it is refused here too). The node modules are imported for their
``SPEC`` (no rclpy.init, no DDS), so this needs rclpy installed but no network namespace.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("rclpy")

from simreal_ros.bringup.graph import GraphOptions, build_calibrate_graph, build_graph, load_real_driver  # noqa: E402
from simreal_ros.settings import Setting, SettingError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"
#: data files that are not a node's ROS parameters (each has its own loader and tests)
DATA_FILES = {"panda_joint_limits.yaml", "panda_impedance.yaml", "randomization.yaml", "real_driver.yaml",
              "push_task.yaml", "promotion.yaml"}


def _push_bundle() -> str:
    """A push (planar) bundle for the push graph's node list (the graph checks the policy's task)."""
    import tempfile

    from simreal_ros.policy.onnx_linear import write_linear_bundle
    from simreal_ros.sim.push_env import PUSH_TERMS, PushEnv

    env = PushEnv()
    return str(write_linear_bundle(Path(tempfile.mkdtemp()) / "push", env.robot, terms=PUSH_TERMS,
                                   action_type="tool_planar_delta", action_scale=env.task.action_scale,
                                   control_rate_hz=env.task.control_rate_hz, action_planar=env.action_planar))


#: node -> module, from the graphs (the one place that says which file feeds which node)
NODES = {n.name: (n.module, Path(n.param_files[0]))
         for n in [*build_graph(GraphOptions(view=True)), *build_calibrate_graph(GraphOptions()),
                   *build_graph(GraphOptions(task="push", policy=_push_bundle()))]}
#: files whose owner has not converted them yet: {file name: reason}; each case is xfail(strict)
PENDING: dict[str, str] = {}  # name -> reason, for a file whose node is being converted


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _header(path: Path) -> str:
    """The leading comment block, as one line of text."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _ros_type_ok(spec: Setting, value: Any) -> bool:
    """The value has the parameter's ROS type (what a params file must give rclpy)."""
    kind = spec.kind
    if kind is float:
        return isinstance(value, float)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        element = str if spec.element_kind is str else float
        return isinstance(value, list) and all(isinstance(x, element) for x in value)
    return isinstance(value, kind)


def _canonical(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _file_case(name: str):
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[name])] if name in PENDING else []
    return pytest.param(name, marks=marks, id=name)


def _is_parameter_file(path: Path) -> bool:
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and any(isinstance(v, dict) and "ros__parameters" in v for v in data.values())


def _node_files() -> list[str]:
    return sorted(p.name for p in CONFIG.glob("*.yaml") if _is_parameter_file(p))


def test_every_parameter_file_is_a_graph_nodes_file():
    node_files = {path.name for _, path in NODES.values()}
    assert set(_node_files()) == node_files, "a parameter file no graph node reads (or a node without a file)"
    assert {p.name for p in CONFIG.glob("*.yaml")} - node_files <= DATA_FILES, "an unknown config file"
    for name in DATA_FILES & {"panda_joint_limits.yaml", "randomization.yaml", "real_driver.yaml"}:
        assert not _is_parameter_file(CONFIG / name), name


def _spec(node: str) -> dict[str, Setting]:
    module, _ = NODES[node]
    return {s.name: s for s in importlib.import_module(module).SPEC}


@pytest.mark.parametrize("name", [_file_case(n) for n in _node_files()])
def test_every_key_is_a_parameter_with_a_valid_value_and_documented_defaults_are_the_code_defaults(name):
    path = CONFIG / name
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and len(data) == 1, f"{name}: one '<node>: ros__parameters:' section"
    (node, section), = data.items()
    assert node in NODES and NODES[node][1].name == name, f"{name}: section '{node}' is not the graph's node"
    values = _flatten(section["ros__parameters"])
    spec = _spec(node)
    unknown = sorted(set(values) - set(spec))
    assert not unknown, f"{name}: keys that are not parameters of {node}: {unknown}"
    bad = []
    for key, value in values.items():
        if not _ros_type_ok(spec[key], value):
            bad.append(f"{key} = {value!r}: not a ROS {spec[key].kind.__name__} (the node would refuse the file)")
            continue
        try:
            spec[key].validate(value, name)
        except SettingError as exc:
            bad.append(str(exc))
    assert not bad, "\n".join(bad)

    header = _header(path)
    documented = re.search(r"Values shown are the defaults(, except(.*?)\.(\s|$))?", header)
    if documented is None:
        return
    exceptions = set(re.findall(r"[a-z_]+(?:\.[a-z_]+)?", documented.group(2) or "")) & set(spec)
    for key in exceptions:  # a documented exception is real: in the file and different from the code
        assert key in values and spec[key].validate(values[key]) != spec[key].default, \
            f"{name}: '{key}' is listed as not the default but is absent or equal to it"
    differ = {k: (v, spec[k].default) for k, v in values.items()
              if k not in exceptions and _canonical(spec[k].validate(v)) != _canonical(spec[k].default)}
    assert not differ, f"{name} says its values are the defaults; (file, code) differ: {differ}"


def test_core_settings_of_the_files_build_the_core_configs():
    """Cross-field checks (e.g. the shield's max_step_gap >= control_period) hold for the files."""
    from simreal_ros.baseline import BaselineConfig
    from simreal_ros.estimator.estimator import EstimatorConfig, estimator_settings
    from simreal_ros.policy.executor import ExecutorConfig
    from simreal_ros.settings import from_settings
    from simreal_ros.shield.config import load_shield_config, read_node_parameters

    load_shield_config(CONFIG / "shield.yaml")
    est = _flatten(read_node_parameters(CONFIG / "estimator.yaml", "state_estimator"))
    cfg = EstimatorConfig.from_mapping({k: v for k, v in est.items() if k in {s.name for s in estimator_settings()}})
    assert cfg.kalman.velocity_delay == 0.0005  # the file's sim value reached the core
    from_settings(BaselineConfig, read_node_parameters(CONFIG / "baseline.yaml", "baseline_controller"), "baseline")
    from_settings(ExecutorConfig, read_node_parameters(CONFIG / "policy.yaml", "policy_executor"), "policy")


def _topic_values(node: str) -> set[str]:
    from simreal_ros.shield.config import read_node_parameters

    _, path = NODES[node]
    values = _flatten(read_node_parameters(path, node)).values()
    flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
    return {x.split(":", 1)[0] for x in flat if isinstance(x, str) and x.startswith("/")}


def test_real_driver_file_names_topics_the_nodes_have():
    """config/real_driver.yaml parses, and each topic it names is a topic parameter of the
    graph's nodes (what mode:=real remaps: a name no node uses would remap nothing)."""
    topics = load_real_driver(CONFIG / "real_driver.yaml")
    assert set(topics) == {"joint_states", "position_command", "effort_command"}
    used = {node: _topic_values(node) for node in NODES}
    for key, topic in topics.items():
        users = sorted(n for n, t in used.items() if topic in t)
        assert users, f"real_driver.yaml '{key}' = {topic}: no node has it as a topic parameter"
    # the real graph remaps only topics a node has, to the driver's names
    nodes = build_graph(GraphOptions(mode="real", force_stage=True))  # the structure (the stage gate: test_rollout)
    remapped = set()
    for n in nodes:
        for src, dst in n.remappings:
            assert src in used[n.name], (n.name, src)
            assert dst in topics.values()
            remapped.add(src)
    assert {"/joint_states", "/forward_position_controller/commands"} <= remapped


def test_the_documented_topic_list_names_every_default_topic():
    """simreal_ros/nodes/__init__.py lists the default topics: every topic a node's parameters
    default to is in it, and it names none that no node has."""
    import simreal_ros.nodes as nodes_pkg

    listed = set(re.findall(r"^(/\S+)\s", nodes_pkg.__doc__, flags=re.M))
    defaults = set()
    for node in NODES:
        for s in _spec(node).values():
            values = s.default if isinstance(s.default, tuple) else (s.default,)
            defaults |= {v.split(":", 1)[0] for v in values if isinstance(v, str) and v.startswith("/")}
    fixed = {"/diagnostics", "/clock", "/simreal/recorder/status"}  # not parameters: fixed names
    assert defaults - listed == set(), "default topics missing from the documented list"
    assert listed - defaults - fixed == set(), "documented topics that no node has"
