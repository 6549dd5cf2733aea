"""The node graph, defined once: which nodes run, their parameter files, overrides and remappings.

Used by ``launch/bringup.launch.py`` (robots with a full ROS 2 install) and by ``simreal sim``
(machines with only the pip-installed ROS wheels). ROS-free, so it is unit-tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simreal_ros.resources import resource

PACKAGE = "simreal_ros"
MODES = ("sim", "real")
SHIELD_MODES = ("active", "shadow", "blend", "hold")
TIMINGS = ("paced", "unpaced")
SIM_STATE_TIMEOUT_S = 0.5  # the shield's state watchdog in simulation (see build_graph)


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


#: Launch arguments, shared by the launch file and the CLI (so both accept the same options).
LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg("mode", "sim", "sim: MuJoCo sim bridge; real: connect to the real arm's driver topics", MODES),
    LaunchArg("policy", "", "policy bundle directory (empty: the shipped policies/reach_default)"),
    LaunchArg("shield_mode", "active", "shield mode at start: active | shadow | blend | hold", SHIELD_MODES),
    LaunchArg("record", "true", "record the run to a rosbag2 (MCAP) bag", ("true", "false")),
    LaunchArg("output_dir", "runs", "directory for recorded bags"),
    LaunchArg("timing", "paced", "sim only: paced to wall clock, or unpaced with /clock (use_sim_time)", TIMINGS),
    LaunchArg("randomization", "nominal", "sim only: randomization profile from config/randomization.yaml"),
    LaunchArg("seed", "0", "sim only: seed of the sim's random draws"),
    LaunchArg("real_driver_config", "", "real only: driver topic file (empty: config/real_driver.yaml)"),
)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, independent of how it is started."""

    name: str  # node name (also the key of its section in the parameter files)
    executable: str  # console script (``ros2 run simreal_ros <executable>``)
    module: str  # python module whose ``main`` runs it (``python -m <module>``)
    param_files: tuple[Path, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides, applied after the files
    remappings: tuple[tuple[str, str], ...] = ()
    lifecycle: bool = False

    def ros_args(self, extra_params_file: Path | None = None) -> list[str]:
        """``--ros-args`` for a process running this node alone."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for f in self.param_files:
            args += ["--params-file", str(f)]
        if extra_params_file is not None:
            args += ["--params-file", str(extra_params_file)]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


@dataclass(frozen=True)
class GraphOptions:
    """The launch arguments, validated."""

    mode: str = "sim"
    policy: str = ""
    shield_mode: str = "active"
    record: bool = True
    output_dir: str = "runs"
    timing: str = "paced"
    randomization: str = "nominal"
    seed: int = 0
    real_driver_config: str = ""
    bag_name: str = ""

    def __post_init__(self) -> None:
        for name, allowed in (("mode", MODES), ("shield_mode", SHIELD_MODES), ("timing", TIMINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"launch argument '{name}' = {getattr(self, name)!r}; allowed: {list(allowed)}")
        if self.policy and not Path(self.policy).exists():
            raise ValueError(f"launch argument 'policy' = {self.policy!r}: no such bundle directory")

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> GraphOptions:
        """From launch-argument strings (what the launch file and the CLI both have)."""
        known = {a.name for a in LAUNCH_ARGS} | {"bag_name"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown launch argument(s) {sorted(unknown)}; known: {sorted(known)}")
        v = dict(values)
        if "record" in v:
            if str(v["record"]).lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"launch argument 'record' = {v['record']!r}; allowed: true, false")
            v["record"] = str(v["record"]).lower() in ("true", "1")
        if "seed" in v:
            try:
                v["seed"] = int(v["seed"])
            except ValueError:
                raise ValueError(f"launch argument 'seed' = {v['seed']!r}; allowed: an integer") from None
        return cls(**v)


def load_real_driver(path: str | Path | None) -> dict[str, str]:
    """Topics of the real arm's driver (config/real_driver.yaml)."""
    path = Path(path) if path else resource("config", "real_driver.yaml")
    data = yaml.safe_load(Path(path).read_text()) or {}
    topics = data.get("topics")
    required = ("joint_states", "position_command")
    if not isinstance(topics, dict) or any(not isinstance(topics.get(k), str) for k in required):
        raise ValueError(f"{path}: needs 'topics' with string entries {list(required)}")
    return topics


def _config(name: str) -> Path:
    return resource("config", name)


def build_graph(opts: GraphOptions) -> list[NodeSpec]:
    """The nodes for ``opts``; sim and real share every node but the sim bridge."""
    sim_time = opts.mode == "sim" and opts.timing == "unpaced"
    common = {"use_sim_time": sim_time}
    nodes: list[NodeSpec] = []
    # Remappings that point the graph at the real driver's topics; identity in sim.
    driver_remaps: tuple[tuple[str, str], ...] = ()
    if opts.mode == "sim":
        nodes.append(NodeSpec(
            "sim_bridge", "sim_bridge", "simreal_ros.nodes.sim_bridge_node", (_config("sim_bridge.yaml"),),
            {**common, "timing": opts.timing, "randomization_profile": opts.randomization, "seed": opts.seed},
        ))
    else:
        topics = load_real_driver(opts.real_driver_config)
        driver_remaps = (("/joint_states", topics["joint_states"]),
                         ("/forward_position_controller/commands", topics["position_command"]))
    nodes.append(NodeSpec("state_estimator", "state_estimator", "simreal_ros.nodes.estimator_node",
                          (_config("estimator.yaml"),), dict(common), driver_remaps))
    policy_params = dict(common)
    if opts.policy:
        policy_params["bundle"] = str(Path(opts.policy).resolve())
    nodes.append(NodeSpec("policy_executor", "policy_executor", "simreal_ros.nodes.policy_node",
                          (_config("policy.yaml"),), policy_params))
    nodes.append(NodeSpec("baseline_controller", "baseline_controller", "simreal_ros.nodes.baseline_node",
                          (_config("baseline.yaml"),), dict(common)))
    shield = {**common, "mode": opts.shield_mode, "autostart": True}
    if opts.mode == "sim":
        # A laptop sim shares its cores with the whole stack: DDS delivery stalls of a few hundred
        # ms happen under load and are not a dead driver. On the robot config/shield.yaml's value holds.
        shield["state_timeout"] = SIM_STATE_TIMEOUT_S
    nodes.append(NodeSpec("safety_shield", "safety_shield", "simreal_ros.nodes.shield_node",
                          (_config("shield.yaml"),), shield, driver_remaps, lifecycle=True))
    if opts.record:
        rec = {**common, "output_dir": str(Path(opts.output_dir).resolve())}
        if opts.bag_name:
            rec["bag_name"] = opts.bag_name
        nodes.append(NodeSpec("recorder", "recorder", "simreal_ros.nodes.recorder_node",
                              (_config("recorder.yaml"),), rec, driver_remaps))
    return nodes


def overrides_yaml(nodes: list[NodeSpec]) -> str:
    """The per-node overrides as one ``ros__parameters`` file (what ``--params-file`` takes)."""
    return yaml.safe_dump({n.name: {"ros__parameters": n.parameters} for n in nodes if n.parameters},
                          sort_keys=True)
