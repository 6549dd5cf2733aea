"""The node graph, defined once: which nodes run, their parameter files, overrides and remappings.

Used by ``launch/bringup.launch.py`` (robots with a full ROS 2 install) and by ``simreal sim``
(machines with only the pip-installed ROS wheels). ROS-free, so it is unit-tested directly.

The policy bundle's manifest sets the graph's control rate: the shield's ``control_period``
(its watchdog and step period) and the baseline's ``rate_hz`` follow ``control_rate_hz``, so a
25 Hz policy does not run under a 20 Hz shield. The shield's settings are validated here with
the loader the node uses (:func:`shield_config`), so a graph that cannot run is refused before
anything starts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from simreal_ros import topics
from simreal_ros.nodes.spin import EXECUTORS
from simreal_ros.policy.bundle import read_manifest
from simreal_ros.policy.executor import TRIGGERS
from simreal_ros.resources import ResourceNotFoundError, resource
from simreal_ros.rollout.stage import check_stage
from simreal_ros.settings import SettingError
from simreal_ros.shield.config import SHIELD_SETTINGS, ShieldConfig, load_shield_config, read_node_parameters

PACKAGE = "simreal_ros"
MODES = ("sim", "real")
TASKS = ("reach", "push")
SHIELD_MODES = ("active", "shadow", "blend", "hold")
TIMINGS = ("paced", "unpaced")
SIM_STATE_TIMEOUT_S = 0.5  # the shield's state watchdog in simulation (see build_graph)
DEFAULT_POLICY = ("policies", "reach_default")
#: the shield's command watchdog and longest continued step span at least this many control periods
TIMEOUT_PERIODS = 2.0
#: Niceness of every node's process but the live view (the ``nice`` parameter): on a loaded
#: machine the graph is scheduled before ordinary work, so a busy laptop does not starve the
#: policy into the shield's command timeout (measured with two CPU hogs per core: the shield held
#: for lack of a fresh command and its automatic revert handed the arm to the baseline) nor delay
#: the recorder's receive times (the bag's log times, which calibration uses as arrival times).
URGENT_NICE = -10


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


#: Launch arguments, shared by the launch file and the CLI (so both accept the same options).
LAUNCH_ARGS: tuple[LaunchArg, ...] = (
    LaunchArg("mode", "sim", "sim: MuJoCo sim bridge; real: connect to the real arm's driver topics", MODES),
    LaunchArg("task", "reach", "reach (free-space reaching) or push (a puck on the table, the pusher tool, the "
              "tracked puck pose on /simreal/object_pose)", TASKS),
    LaunchArg("policy", "", "policy bundle directory (empty: the shipped policies/<task>_default)"),
    LaunchArg("shield_mode", "active", "shield mode at start: active | shadow | blend | hold", SHIELD_MODES),
    LaunchArg("record", "true", "record the run to a rosbag2 (MCAP) bag", ("true", "false")),
    LaunchArg("output_dir", "runs", "directory for recorded bags"),
    LaunchArg("timing", "paced", "sim only: paced to wall clock, or unpaced with /clock (use_sim_time)", TIMINGS),
    LaunchArg("randomization", "nominal", "sim only: randomization profile from config/randomization.yaml, or a "
              "file (e.g. a calibration.yaml of simreal calibrate fit)"),
    LaunchArg("seed", "0", "sim only: seed of the sim's random draws"),
    LaunchArg("real_driver_config", "", "real only: driver topic file (empty: config/real_driver.yaml)"),
    LaunchArg("view", "false", "serve a Foxglove live view on a local WebSocket (live_view node, config/view.yaml)",
              ("true", "false")),
    LaunchArg("trigger", "estimate", "what starts a policy cycle: estimate (a new state, at most at the manifest "
              "rate) or timer (free-running)", TRIGGERS),
    LaunchArg("executor", "events", "callback executor of every node: events or single_threaded", EXECUTORS),
    LaunchArg("real_arm", "", "sim only: hidden 'real' arm/table file of exact values (simreal_ros/sim/real_arm.py)"),
    LaunchArg("latent", "-1", "exploration families (simreal train --explore N): the policy's latent code 0..N-1 "
              "(-1: none; such a bundle refuses to start without one); /simreal/policy/latent switches it"),
    LaunchArg("force_stage", "false", "run the policy in shield_mode even if its bundle has not been promoted to that "
              "rollout stage (simreal promote; see simreal_ros/rollout/stage.py)", ("true", "false")),
)


#: Launch arguments of the calibrate graph (``calibrate.launch.py``, ``simreal calibrate record``):
#: the excitation controller drives instead of the policy/baseline, and the run is always recorded.
CALIBRATE_ARGS: tuple[LaunchArg, ...] = (
    *(a for a in LAUNCH_ARGS if a.name in ("mode", "output_dir", "timing", "randomization", "seed",
                                           "real_driver_config", "real_arm")),
    LaunchArg("duration", "30", "s of excitation (excitation_controller's duration; then it holds the centre)"),
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
    task: str = "reach"
    policy: str = ""
    shield_mode: str = "active"
    record: bool = True
    output_dir: str = "runs"
    timing: str = "paced"
    randomization: str = "nominal"
    seed: int = 0
    real_driver_config: str = ""
    trigger: str = "estimate"
    executor: str = "events"
    bag_name: str = ""

    duration: float = 30.0  # calibrate graph: s of excitation
    real_arm: str = ""  # sim only: hidden real arm file (sim bridge's real_arm)
    view: bool = False  # the live_view node (Foxglove WebSocket)
    force_stage: bool = False  # run a bundle in a shield mode its rollout stage does not allow
    latent: int = -1  # an exploration family's code (the policy node's latent parameter)

    def __post_init__(self) -> None:
        for name, allowed in (("mode", MODES), ("task", TASKS), ("shield_mode", SHIELD_MODES), ("timing", TIMINGS),
                              ("trigger", TRIGGERS), ("executor", EXECUTORS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"launch argument '{name}' = {getattr(self, name)!r}; allowed: {list(allowed)}")
        if self.policy and not Path(self.policy).exists():
            raise ValueError(f"launch argument 'policy' = {self.policy!r}: no such bundle directory")

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> GraphOptions:
        """From launch-argument strings (what the launch file and the CLI both have)."""
        known = {a.name for a in (*LAUNCH_ARGS, *CALIBRATE_ARGS)} | {"bag_name"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown launch argument(s) {sorted(unknown)}; known: {sorted(known)}")
        v = dict(values)
        for flag in ("record", "view", "force_stage"):
            if flag in v:
                if str(v[flag]).lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"launch argument '{flag}' = {v[flag]!r}; allowed: true, false")
                v[flag] = str(v[flag]).lower() in ("true", "1")
        if "duration" in v:
            try:
                v["duration"] = float(v["duration"])
            except ValueError:
                raise ValueError(f"launch argument 'duration' = {v['duration']!r}; allowed: a number (s)") from None
        for key in ("seed", "latent"):
            if key in v:
                try:
                    v[key] = int(v[key])
                except ValueError:
                    raise ValueError(f"launch argument '{key}' = {v[key]!r}; allowed: an integer") from None
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


def policy_directory(opts: GraphOptions) -> Path:
    """The policy bundle the graph runs (``opts.policy`` or the task's shipped default)."""
    if opts.policy:
        return Path(opts.policy).resolve()
    try:
        return resource("policies", f"{opts.task}_default")
    except ResourceNotFoundError as exc:
        raise ValueError(f"launch argument 'policy' is empty and the shipped bundle is missing ({exc})") from None


def shield_timing(rate_hz: float, file_config: ShieldConfig) -> dict[str, float]:
    """The shield's settings that follow the control rate: ``control_period`` is one period;
    ``command_timeout`` and ``max_step_gap`` keep the file's values unless those are shorter than
    :data:`TIMEOUT_PERIODS` periods (a slow policy must not time out between its own commands)."""
    period = 1.0 / rate_hz
    floor = TIMEOUT_PERIODS * period
    return {"control_period": period, "command_timeout": max(file_config.command_timeout, floor),
            "max_step_gap": max(file_config.max_step_gap, floor)}


def shield_config(spec: NodeSpec) -> ShieldConfig:
    """The shield's settings exactly as the node of ``spec`` gets them: its parameter file, then
    the graph's overrides (what ``simreal sim``'s report checks the bag with)."""
    names = {s.name for s in SHIELD_SETTINGS}
    return load_shield_config(spec.param_files[-1], **{k: v for k, v in spec.parameters.items() if k in names})


def view_config(spec: NodeSpec):
    """The live view's settings as the node of ``spec`` gets them (its file, then the overrides)."""
    from simreal_ros.view.config import ViewConfig

    values = {**read_node_parameters(spec.param_files[-1], spec.name), **spec.parameters}
    return ViewConfig.from_mapping(values)


def _topics(spec: NodeSpec) -> set[str]:
    """Topic names among a node's parameters (file and overrides; ``name:pkg/msg/Type`` entries too)."""
    values: list = []
    for f in spec.param_files:
        values += list(read_node_parameters(f, spec.name).values())
    values += list(spec.parameters.values())
    flat = [x for v in values for x in (v if isinstance(v, list) else [v])]
    return {x.split(":", 1)[0] for x in flat if isinstance(x, str) and x.startswith("/")}


def _remapped(spec: NodeSpec, remaps: tuple[tuple[str, str], ...]) -> NodeSpec:
    """``spec`` with the driver remappings of the topics it uses (none it does not)."""
    used = _topics(spec)
    return replace(spec, remappings=tuple(r for r in remaps if r[0] in used))


def build_graph(opts: GraphOptions) -> list[NodeSpec]:
    """The nodes for ``opts``; sim and real share every node but the sim bridge.

    Raises:
        ValueError: the policy manifest, a parameter file or an override cannot make a valid
            shield (the message names the file and the key).
    """
    if opts.mode == "real" and opts.real_arm:
        raise ValueError("launch argument 'real_arm' is for mode:=sim (the robot is the real arm)")
    sim_time = opts.mode == "sim" and opts.timing == "unpaced"
    common = {"use_sim_time": sim_time, "executor": opts.executor}
    nodes: list[NodeSpec] = []
    # Remappings that point the graph at the real driver's topics; none in sim.
    driver_remaps: tuple[tuple[str, str], ...] = ()
    if opts.mode == "sim":
        nodes.append(_sim_bridge(opts, common))
    else:
        topics = load_real_driver(opts.real_driver_config)
        driver_remaps = (("/joint_states", topics["joint_states"]),
                         ("/forward_position_controller/commands", topics["position_command"]))
    bundle = policy_directory(opts)
    manifest = read_manifest(bundle)[0]
    rate = manifest.control_rate_hz  # the bundle's own rate drives the whole loop
    warning = check_stage(bundle, opts.shield_mode, opts.mode, opts.force_stage)  # StageError: refused
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    from simreal_ros.training.tasks import task_of_manifest

    if task_of_manifest(manifest) != opts.task:
        raise ValueError(f"policy {bundle} is a {task_of_manifest(manifest)} policy; launch argument task is "
                         f"{opts.task!r}")
    nodes.append(NodeSpec("state_estimator", "state_estimator", "simreal_ros.nodes.estimator_node",
                          (_config("estimator.yaml"),), dict(common)))
    policy_params = {**common, "trigger": opts.trigger}
    if opts.policy or opts.task != "reach":
        policy_params["bundle"] = str(bundle)
    if opts.latent >= 0:
        policy_params["latent"] = opts.latent
    nodes.append(NodeSpec("policy_executor", "policy_executor", "simreal_ros.nodes.policy_node",
                          (_config("policy.yaml"),), policy_params))
    if opts.task == "push":  # the scripted pusher is the baseline and the shield's fallback
        nodes.append(NodeSpec(PUSH_BASELINE, PUSH_BASELINE, "simreal_ros.nodes.pusher_node",
                              (_config("push_baseline.yaml"),), {**common, "rate_hz": rate}))
    else:
        nodes.append(NodeSpec("baseline_controller", "baseline_controller", "simreal_ros.nodes.baseline_node",
                              (_config("baseline.yaml"),), {**common, "rate_hz": rate}))
    shield_file = _config("shield.yaml")
    shield = {**common, "mode": opts.shield_mode, "autostart": True,
              **shield_timing(rate, load_shield_config(shield_file)),
              # the running shield checks every later mode switch with the same rule (StageGate)
              "rollout_bundle": str(Path(bundle).resolve()), "rollout_target": opts.mode,
              "force_stage": bool(opts.force_stage)}
    if opts.task == "push":
        shield.update(push_flange_box())
    if opts.mode == "sim":
        # A laptop sim shares its cores with the whole stack: DDS delivery stalls of a few hundred
        # ms happen under load and are not a dead driver. On the robot config/shield.yaml's value holds.
        shield["state_timeout"] = SIM_STATE_TIMEOUT_S
    nodes.append(NodeSpec("safety_shield", "safety_shield", "simreal_ros.nodes.shield_node",
                          (shield_file,), shield, lifecycle=True))
    try:
        shield_config(nodes[-1])
    except SettingError as exc:
        raise SettingError(f"policy {bundle} (control_rate_hz {rate:g}) with {shield_file}: {exc}") from None
    if opts.record:
        rec = {**common, "output_dir": str(Path(opts.output_dir).resolve())}
        if opts.bag_name:
            rec["bag_name"] = opts.bag_name
        if opts.task == "push":
            recorded = list(read_node_parameters(_config("recorder.yaml"), "recorder").get("topics", []))
            rec["topics"] = [*recorded, OBJECT_TOPIC]
        nodes.append(NodeSpec("recorder", "recorder", "simreal_ros.nodes.recorder_node",
                              (_config("recorder.yaml"),), rec))
    nodes = [replace(n, parameters={**n.parameters, "nice": URGENT_NICE}) for n in nodes]
    if opts.view:  # a viewer is not urgent: ordinary niceness
        nodes.append(NodeSpec("live_view", "live_view", "simreal_ros.nodes.view_node", (_config("view.yaml"),),
                              dict(common)))
        view_config(nodes[-1])  # a bad host/port/rate in the file is refused before anything starts
    return [_remapped(n, driver_remaps) for n in nodes] if driver_remaps else nodes


def overrides_yaml(nodes: list[NodeSpec]) -> str:
    """The per-node overrides as one ``ros__parameters`` file (what ``--params-file`` takes)."""
    return yaml.safe_dump({n.name: {"ros__parameters": n.parameters} for n in nodes if n.parameters},
                          sort_keys=True)


def _file_argument(name: str, value: str, what: str) -> str:
    """A launch argument naming a file, as an absolute path (node processes may run elsewhere)."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"launch argument '{name}' = {value!r}: no such {what} file")
    return str(path.resolve())


def _randomization(value: str) -> str:
    """The sim bridge's ``randomization_profile``: a profile name, or a file (a calibration.yaml)
    as an absolute path; either is checked with the loader the bridge uses."""
    from simreal_ros.sim.randomize import load_ranges

    try:
        load_ranges(profile=value)  # a profile name of config/randomization.yaml
        return value
    except ValueError as exc:
        if not any(c in value for c in "/\\") and not value.endswith((".yaml", ".yml")):
            raise ValueError(f"launch argument 'randomization' = {value!r}: {exc}") from None
    path = _file_argument("randomization", value, "randomization profile")
    try:
        load_ranges(profile=path)
    except ValueError as exc:
        raise ValueError(f"launch argument 'randomization' = {value!r}: {exc}") from None
    return path


PUSH_BASELINE = "push_baseline"
OBJECT_TOPIC = topics.OBJECT_POSE


def push_flange_box() -> dict[str, Any]:
    """The shield's Cartesian box for the push task: the flange over the task's workspace (with a
    2 cm margin), never lower than the tool tip touching the table (config/push_task.yaml,
    urdf/panda_pusher.yaml), so no command can drive the tool into the table."""
    from simreal_ros.robot.mujoco_model import TABLE_TOP
    from simreal_ros.robot.tool import load_tool
    from simreal_ros.sim.push_task import load_push_task

    t, tool = load_push_task(), load_tool()
    x0, y0, x1, y1 = t.workspace
    margin = 0.02
    # the flange alone (cartesian_box_links off: the arm's links are outside this workspace box) and
    # no clearance: the tool tip is meant to reach the table
    return {"cartesian_box_enabled": True, "cartesian_box_links": False, "cartesian_box_clearance": 0.0,
            "cartesian_box": [x0 - margin, y0 - margin, TABLE_TOP + tool.length, x1 + margin, y1 + margin,
                              TABLE_TOP + tool.length + 0.4]}


def _sim_bridge(opts: GraphOptions, common: dict[str, Any]) -> NodeSpec:
    """The sim bridge of a sim graph: task, timing, randomization (profile or file), seed, hidden arm."""
    params = {**common, "timing": opts.timing, "randomization_profile": _randomization(opts.randomization),
              "seed": opts.seed, "task": opts.task}
    if opts.real_arm:
        from simreal_ros.robot import load_robot
        from simreal_ros.sim.real_arm import load_real_arm

        params["real_arm"] = _file_argument("real_arm", opts.real_arm, "hidden real arm")
        if params["randomization_profile"] != "nominal":
            raise ValueError(f"launch argument 'real_arm' = {opts.real_arm!r} has exact values: it cannot be combined "
                             f"with randomization {opts.randomization!r} (leave it nominal)")
        load_real_arm(params["real_arm"], load_robot())  # refused here, before anything starts
    return NodeSpec("sim_bridge", "sim_bridge", "simreal_ros.nodes.sim_bridge_node", (_config("sim_bridge.yaml"),),
                    params)


EXCITATION_NODE = "excitation_controller"


def build_calibrate_graph(opts: GraphOptions) -> list[NodeSpec]:
    """The identification graph: the bringup graph with the excitation controller proposing
    through the shield in place of the policy and the baseline (shield active, every limit, the
    e-stop and watchdogs as in bringup; no revert, see below), always recorded (the excitation's
    proposals too). The excitation's ``rate_hz`` (config/excitation.yaml) is the shield's
    control rate; unpaced, the sim bridge runs in lockstep with it (``sync_period``), so each
    sent command acts exactly at its stamp (paced, as on the robot, transport delays add to it).

    Raises:
        ValueError: a bad option, parameter file or override (the message names it).
    """
    from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationRunConfig
    from simreal_ros.settings import from_settings

    if opts.mode == "real" and opts.real_arm:
        raise ValueError("launch argument 'real_arm' is for mode:=sim (the robot is the real arm)")
    sim_time = opts.mode == "sim" and opts.timing == "unpaced"
    common = {"use_sim_time": sim_time}
    nodes: list[NodeSpec] = []
    driver_remaps: tuple[tuple[str, str], ...] = ()
    exc_file = _config("excitation.yaml")
    exc = read_node_parameters(exc_file, EXCITATION_NODE)
    try:
        run = from_settings(ExcitationRunConfig, exc, str(exc_file))
        from_settings(ExcitationConfig, {**exc, "duration": opts.duration}, f"{exc_file} with duration")
    except ValueError as exc_error:
        raise ValueError(f"calibrate graph: {exc_error}") from None
    if opts.mode == "sim":
        bridge = _sim_bridge(opts, common)
        if sim_time:  # lockstep: every sent command acts at the sim time the shield stamped it with
            bridge.parameters["sync_period"] = 1.0 / run.rate_hz
        nodes.append(bridge)
    else:
        topics = load_real_driver(opts.real_driver_config)
        driver_remaps = (("/joint_states", topics["joint_states"]),
                         ("/forward_position_controller/commands", topics["position_command"]))
    nodes.append(NodeSpec("state_estimator", "state_estimator", "simreal_ros.nodes.estimator_node",
                          (_config("estimator.yaml"),), dict(common)))
    topic = exc.get("command_topic", "/simreal/excitation/command")
    # it starts once the recorder subscribed to what the fit reads: the bag holds the whole run
    nodes.append(NodeSpec(EXCITATION_NODE, EXCITATION_NODE, "simreal_ros.nodes.excitation_node", (exc_file,),
                          {**common, "duration": float(opts.duration), "recorder": "recorder"}))
    shield_file = _config("shield.yaml")
    # Every limit, the e-stop and the watchdogs as in bringup. No revert: it hands a misbehaving
    # policy over to the baseline, and none runs here; a clipped excitation is still good data
    # (the fit replays the commands the shield sent, not the proposals), and under CPU load the
    # proposals' arrival jitter alone makes the shield clip half the cycles of a fast excitation.
    shield = {**common, "mode": "active", "autostart": True, "policy_topic": topic, "revert_fraction": 1.0,
              "revert_target": "hold", **shield_timing(run.rate_hz, load_shield_config(shield_file))}
    if opts.mode == "sim":
        shield["state_timeout"] = SIM_STATE_TIMEOUT_S
    nodes.append(NodeSpec("safety_shield", "safety_shield", "simreal_ros.nodes.shield_node", (shield_file,), shield,
                          lifecycle=True))
    try:
        shield_config(nodes[-1])
    except SettingError as exc_error:
        raise SettingError(f"excitation rate_hz {run.rate_hz:g} ({exc_file}) with {shield_file}: {exc_error}") from None
    rec_file = _config("recorder.yaml")
    recorded = list(read_node_parameters(rec_file, "recorder").get("topics", []))
    rec = {**common, "output_dir": str(Path(opts.output_dir).resolve()), "topics": [*recorded, topic]}
    if opts.bag_name:
        rec["bag_name"] = opts.bag_name
    nodes.append(NodeSpec("recorder", "recorder", "simreal_ros.nodes.recorder_node", (rec_file,), rec))
    nodes = [replace(n, parameters={**n.parameters, "nice": URGENT_NICE}) for n in nodes]
    return [_remapped(n, driver_remaps) for n in nodes] if driver_remaps else nodes
