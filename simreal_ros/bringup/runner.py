"""Run a node graph without ``ros2 launch``: in one process (executor composition), as
separate processes, or as separate processes with a group of nodes composed in one of them
(e.g. the hot path estimator -> policy -> shield: ``HOT_PATH``). All start exactly the nodes,
parameter files, overrides and remappings that ``build_graph`` gives the launch file.

``python -m simreal_ros.bringup.runner OVERRIDES NAME=MODULE...`` runs the composed group of a
:class:`ProcessGraph` (its nodes' parameter files and remappings are in the ``--ros-args``
that follow).
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from simreal_ros.bringup.graph import NodeSpec, overrides_yaml

#: The nodes between a joint state and the command computed from it.
HOT_PATH = ("state_estimator", "policy_executor", "safety_shield")


def node_class(module: str):
    """The rclpy Node subclass a node module defines (its ``NODE_CLASS`` or the only one)."""
    from rclpy.node import Node

    mod = importlib.import_module(module)
    cls = getattr(mod, "NODE_CLASS", None)
    if cls is not None:
        return cls
    found = [c for _, c in inspect.getmembers(mod, inspect.isclass)
             if issubclass(c, Node) and c.__module__ == mod.__name__]
    if len(found) != 1:
        raise RuntimeError(f"{module}: expected one Node subclass (or NODE_CLASS), found {found}")
    return found[0]


def write_overrides(nodes: list[NodeSpec], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "graph_parameters.yaml"
    path.write_text(overrides_yaml(nodes))
    return path


def composed_args(nodes: list[NodeSpec], overrides: Path) -> list[str]:
    """Global ``--ros-args`` of nodes composed in one process: every node's parameter file (each
    file's section is keyed by node name), the overrides, node-scoped remappings."""
    args = ["--ros-args"]
    for spec in nodes:
        for f in spec.param_files:
            args += ["--params-file", str(f)]
    args += ["--params-file", str(overrides)]
    for spec in nodes:
        for src, dst in spec.remappings:
            args += ["-r", f"{spec.name}:{src}:={dst}"]
    return args


def executor_kind(nodes: list[NodeSpec]) -> str:
    """The one executor the composed ``nodes`` ask for (their ``executor`` parameter)."""
    kinds = {spec.parameters.get("executor", "events") for spec in nodes}
    if len(kinds) != 1:
        raise ValueError(f"composed nodes ask for different executors: {sorted(kinds)}")
    return kinds.pop()


class InProcessGraph:
    """All nodes in this process on one executor (the nodes' ``executor`` parameter; spun in a
    background thread)."""

    def __init__(self, nodes: list[NodeSpec], run_dir: Path) -> None:
        import rclpy

        from simreal_ros.nodes.common import make_executor

        overrides = write_overrides(nodes, run_dir)
        args = ["simreal", *composed_args(nodes, overrides)]
        self.context = rclpy.Context()
        rclpy.init(args=args, context=self.context)
        self.executor = make_executor(executor_kind(nodes), context=self.context)
        self.nodes = []
        for spec in nodes:
            node = node_class(spec.module)(context=self.context)
            self.nodes.append(node)
            self.executor.add_node(node)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add_node(self, node) -> None:
        self.executor.add_node(node)

    def start(self) -> None:
        def spin() -> None:
            while not self._stop.is_set() and self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)

        self._thread = threading.Thread(target=spin, name="simreal-executor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop spinning first, then destroy the nodes, then shut down (other orders abort)."""
        import rclpy

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for node in reversed(self.nodes):
            node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)


class ProcessGraph:
    """Every node in its own Python process (``python -m <module> --ros-args ...``), except the
    nodes named in ``compose``: those share one process (``procs["composed"]``, one executor)."""

    def __init__(self, nodes: list[NodeSpec], run_dir: Path, compose: tuple[str, ...] = ()) -> None:
        unknown = set(compose) - {n.name for n in nodes}
        if unknown:
            raise ValueError(f"cannot compose {sorted(unknown)}: not in the graph")
        self.specs = nodes
        self.compose = tuple(compose)
        self.run_dir = run_dir
        self.overrides = write_overrides(nodes, run_dir)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        group = [s for s in self.specs if s.name in self.compose]
        commands = {s.name: [sys.executable, "-m", s.module, *s.ros_args(self.overrides)]
                    for s in self.specs if s.name not in self.compose}
        if group:
            commands["composed"] = [sys.executable, "-m", __name__, str(self.overrides),
                                    *(f"{s.name}={s.module}" for s in group), *composed_args(group, self.overrides)]
        for name, cmd in commands.items():
            log = open(self.run_dir / f"{name}.log", "wb")
            # The parent's environment passes through (the ROS wheels' bootstrapper needs it).
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def process_of(self, node: str) -> subprocess.Popen:
        return self.procs["composed" if node in self.compose else node]

    def failed(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_composed(argv: list[str]) -> int:
    """``python -m simreal_ros.bringup.runner OVERRIDES NAME=MODULE... --ros-args ...``: the composed
    group of a :class:`ProcessGraph`, stopped cleanly by SIGINT/SIGTERM (as ``run_node``)."""
    import rclpy
    import yaml
    from rclpy.signals import SignalHandlerOptions

    from simreal_ros.nodes.common import make_executor
    from simreal_ros.nodes.spin import apply_niceness

    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    overrides, modules = Path(argv[0]), argv[1:split]
    params = yaml.safe_load(overrides.read_text()) or {}
    group = [params.get(name, {}).get("ros__parameters", {}) for name, _ in (m.split("=", 1) for m in modules)]
    modules = [m.split("=", 1)[1] for m in modules]
    kinds = {p.get("executor", "events") for p in group}
    why = apply_niceness(min((p.get("nice", 0) for p in group), default=0))  # the most urgent node's
    if why:
        print(f"[composed] {why}", file=sys.stderr, flush=True)
    stop: list[int] = []
    rclpy.init(args=["composed", *argv[split:]], signal_handler_options=SignalHandlerOptions.NO)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: stop.append(s))
    nodes = []
    try:
        executor = make_executor(kinds.pop() if len(kinds) == 1 else "events")
        for module in modules:
            nodes.append(node_class(module)())
            executor.add_node(nodes[-1])
        while not stop and all(getattr(n, "exit_code", None) is None for n in nodes):
            executor.spin_once(timeout_sec=0.1)
        code = max((getattr(n, "exit_code", None) or 0 for n in nodes), default=0)
    except ValueError as exc:
        print(f"[composed] refusing to start: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for n in reversed(nodes):
            n.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(run_composed(sys.argv[1:]))
