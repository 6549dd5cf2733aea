"""A node of the session tools' own (the ``simreal sim`` coordinator, the calibrate watcher), in a
private rclpy context, spun by a SingleThreadedExecutor in a background thread (rclpy 9.1.2's
MultiThreadedExecutor loses subscription messages)."""

from __future__ import annotations

import threading
from typing import Any, Callable


class BackgroundNode:
    """``make_node(context)`` builds the node; it is spun until :meth:`close`."""

    def __init__(self, make_node: Callable[[Any], Any]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = make_node(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=10)
        self.node.destroy_node()
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.context)
