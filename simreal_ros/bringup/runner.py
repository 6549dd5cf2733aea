"""Run a node graph without ``ros2 launch``: in one process (executor composition) or as
separate processes. Both start exactly the nodes, parameter files, overrides and remappings
that ``build_graph`` gives the launch file.
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


class InProcessGraph:
    """All nodes in this process on one SingleThreadedExecutor (spun in a background thread).

    The global ``--ros-args`` carry every node's parameter file (each file's section is keyed
    by node name) and node-scoped remappings (``<node>:<from>:=<to>``).
    """

    def __init__(self, nodes: list[NodeSpec], run_dir: Path) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        overrides = write_overrides(nodes, run_dir)
        args = ["simreal", "--ros-args"]
        for spec in nodes:
            for f in spec.param_files:
                args += ["--params-file", str(f)]
        args += ["--params-file", str(overrides)]
        for spec in nodes:
            for src, dst in spec.remappings:
                args += ["-r", f"{spec.name}:{src}:={dst}"]
        self.context = rclpy.Context()
        rclpy.init(args=args, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
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
    """Every node in its own Python process (``python -m <module> --ros-args ...``)."""

    def __init__(self, nodes: list[NodeSpec], run_dir: Path) -> None:
        self.specs = nodes
        self.run_dir = run_dir
        self.overrides = write_overrides(nodes, run_dir)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for spec in self.specs:
            log = open(self.run_dir / f"{spec.name}.log", "wb")
            # The parent's environment passes through (the ROS wheels' bootstrapper needs it).
            self.procs[spec.name] = subprocess.Popen(
                [sys.executable, "-m", spec.module, *spec.ros_args(self.overrides)],
                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

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
