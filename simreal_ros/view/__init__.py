"""Live view: the running stack as Foxglove channels on a local WebSocket (``simreal sim --view``).

ROS-free: :mod:`.convert` turns plain values (joint arrays, stamps, goal points, shield events)
into Foxglove messages, :class:`~simreal_ros.view.server.LiveView` serves them with the
Foxglove SDK; ``simreal_ros/nodes/view_node.py`` is the thin ROS adapter. The channels are
listed once in :data:`~simreal_ros.view.server.CHANNELS`; ``config/foxglove_layout.json`` is a
Foxglove layout that shows them.
"""

from simreal_ros.view.config import ViewConfig

__all__ = ["ViewConfig"]
