"""``main()`` body for nodes that must stop cleanly on SIGINT *and* SIGTERM, at any moment.

rclpy's own signal handler shuts the context down from inside the signal, so a callback
that is running at that moment (a long unpaced sim step, a bag write) or the next wait-set
construction fails with ``RCLError`` and the process exits 1 with a traceback, without the
node's cleanup. Here the signal only sets a flag: the SingleThreadedExecutor loop finishes
the current callback, stops, the node is destroyed (its cleanup runs, e.g. the recorder
closes its bag), and only then rclpy shuts down.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable, Sequence

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from simreal_ros.nodes.params import ParameterError


def run_until_signal(factory: Callable[[], Node], args: Sequence[str] | None = None, name: str = "node") -> int:
    """Init, spin until SIGINT/SIGTERM, destroy the node, shut down. A ParameterError exits 1."""
    stop: list[int] = []
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, lambda s, _f: stop.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop:
            executor.spin_once(timeout_sec=0.1)
        executor.remove_node(node)
    except ParameterError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
