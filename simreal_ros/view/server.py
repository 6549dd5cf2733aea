"""The live view's Foxglove WebSocket server and its channels (declared once in :data:`CHANNELS`).

:class:`LiveView` owns a Foxglove SDK server on its own ``foxglove.Context`` (so two views in
one process do not share channels) and one channel per entry of :data:`CHANNELS`. Each
``publish_*`` method converts plain values with :mod:`simreal_ros.view.convert` and logs them
with the message's own stamp; a channel nobody subscribes to costs nothing.

To show another stream: add a :class:`ViewChannel` here, a converter in :mod:`.convert` and the subscription in
``nodes/view_node.py``'s ``SOURCES``; ``config/foxglove_layout.json`` can then show it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import foxglove
from foxglove import channels as fc

from simreal_ros.robot.model import RobotModel
from simreal_ros.view import convert
from simreal_ros.view.config import ViewConfig

#: JSON schema of a std_msgs/String-like message (the URDF text)
STRING_SCHEMA = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
INTERVENTIONS_SCHEMA = {
    "type": "object",
    "properties": {"stamp_ns": {"type": "integer"}, "count": {"type": "integer"}, "total": {"type": "integer"},
                   "kinds": {"type": "array", "items": {"type": "string"}},
                   "interventions": {"type": "array", "items": {"type": "object", "additionalProperties":
                                                                 {"type": "string"}}}},
}
STATUS_SCHEMA = {"type": "object", "properties": {"stamp_ns": {"type": "integer"}, "level": {"type": "integer"},
                                                  "message": {"type": "string"}, "mode": {"type": "string"},
                                                  "source": {"type": "string"}},
                 "additionalProperties": {"type": "string"}}


@dataclass(frozen=True)
class ViewChannel:
    """One Foxglove channel: its topic, what it carries, and the schema (Foxglove type or JSON)."""

    key: str  # the publish_* methods' name for it
    topic: str
    schema: str  # "foxglove.<Type>" (protobuf, typed channel) or the JSON schema's name
    description: str
    json_schema: dict | None = None


CHANNELS: tuple[ViewChannel, ...] = (
    ViewChannel("description", "/robot_description", "std_msgs/String",
                "the URDF text (Foxglove 3D panel: custom layer 'URDF', source 'topic')", STRING_SCHEMA),
    ViewChannel("tf", "/tf", "foxglove.FrameTransforms",
                "every link in its parent link's frame, from the measured joint positions (package FK)"),
    ViewChannel("joint_states", "/joint_states", "foxglove.JointStates", "measured joint states (driver or sim)"),
    ViewChannel("policy", "/simreal/policy/command", "foxglove.JointStates", "the policy's proposed targets"),
    ViewChannel("baseline", "/simreal/baseline/command", "foxglove.JointStates",
                "the baseline controller's proposed targets"),
    ViewChannel("sent", "/simreal/shield/sent", "foxglove.JointStates",
                "what the shield sent to the arm (its own stamps)"),
    ViewChannel("interventions", "/simreal/shield/interventions", "simreal/ShieldInterventions",
                "per shield cycle: which joints it changed, how, and the running total", INTERVENTIONS_SCHEMA),
    ViewChannel("shield_status", "/simreal/shield/status", "simreal/ShieldStatus",
                "the shield's mode, source, blend alpha, revert and fault state (its /diagnostics)", STATUS_SCHEMA),
    ViewChannel("goal", "/simreal/goal", "foxglove.SceneUpdate", "the flange goal (a sphere in the base frame)"),
    ViewChannel("object", "/simreal/object", "foxglove.SceneUpdate",
                "the pushed object (the push task's puck, from /simreal/object_pose)"),
)
#: channels whose last message is sent again to each new subscriber (ROS latched topics, slow streams)
LATCHED = ("description", "goal", "object", "shield_status")
_TYPED = {"foxglove.FrameTransforms": fc.FrameTransformsChannel, "foxglove.JointStates": fc.JointStatesChannel,
          "foxglove.SceneUpdate": fc.SceneUpdateChannel}
SERVER_NAME = "simreal_ros"


class _Listener(foxglove.ServerListener):
    def __init__(self, on_subscribe) -> None:
        self._on_subscribe = on_subscribe

    def on_subscribe(self, client, channel) -> None:
        self._on_subscribe(channel.topic)


class LiveView:
    """A Foxglove WebSocket server with the live-view channels for ``robot``.

    Raises:
        OSError: the port cannot be bound (the message names host and port).
    """

    def __init__(self, robot: RobotModel, config: ViewConfig | None = None, urdf: str | None = None) -> None:
        self.robot = robot
        self.config = config or ViewConfig()
        self.urdf = urdf if urdf is not None else Path(robot.source["urdf"]).read_text()
        self._names = list(robot.joint_names)
        self._lock = threading.Lock()
        self._last: dict[str, tuple[object, int]] = {}
        self._due: set[str] = set()
        self._by_topic = {c.topic: c.key for c in CHANNELS}
        self.counts = {c.key: 0 for c in CHANNELS}
        self.interventions_total = 0
        self.context = foxglove.Context()
        self.channels = {}
        for c in CHANNELS:
            if c.json_schema is not None:
                schema = foxglove.Schema(name=c.schema, encoding="jsonschema", data=json.dumps(c.json_schema).encode())
                self.channels[c.key] = foxglove.Channel(c.topic, schema=schema, message_encoding="json",
                                                        context=self.context)
            else:
                self.channels[c.key] = _TYPED[c.schema](c.topic, context=self.context)
        try:
            self.server = foxglove.start_server(name=SERVER_NAME, host=self.config.host, port=self.config.port,
                                                context=self.context, server_listener=_Listener(self._subscribed))
        except Exception as exc:  # the SDK raises its own error type for a bind failure
            raise OSError(f"live view: cannot serve on {self.config.host}:{self.config.port}: {exc}") from None

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    def _subscribed(self, topic: str) -> None:
        """(Server thread) a client subscribed: its latched channel is re-sent at the next publish."""
        key = self._by_topic.get(topic)
        if key in LATCHED:
            with self._lock:
                self._due.add(key)

    def _log(self, key: str, msg, stamp_ns: int) -> None:
        if key in LATCHED:
            self._last[key] = (msg, int(stamp_ns))
        self.channels[key].log(msg, log_time=int(stamp_ns))
        self.counts[key] += 1

    def flush_latched(self) -> list[str]:
        """Re-send the last message of each latched channel a client subscribed to since the last
        call (the URDF is always there to send). Returns the keys sent."""
        with self._lock:
            due, self._due = self._due, set()
        sent = []
        for key in sorted(due):
            if key == "description" and key not in self._last:
                self._last[key] = (convert.robot_description(self.urdf), 0)
            if key in self._last:
                msg, stamp = self._last[key]
                self._log(key, msg, stamp)
                sent.append(key)
        return sent

    def subscribed(self, key: str) -> bool:
        return bool(self.channels[key].has_sinks())

    # ------------------------------------------------------------------ publishing
    def publish_description(self, stamp_ns: int) -> None:
        """The robot description (URDF text)."""
        self._log("description", convert.robot_description(self.urdf), stamp_ns)

    def publish_state(self, position: Sequence[float], velocity: Sequence[float] | None,
                      effort: Sequence[float] | None, stamp_ns: int) -> None:
        """Measured joint state (robot order) and the link transforms it gives."""
        self.flush_latched()
        if self.subscribed("joint_states"):
            self._log("joint_states", convert.joint_states(self._names, position, velocity, effort, stamp_ns), stamp_ns)
        if self.subscribed("tf"):
            self._log("tf", convert.link_transforms(self.robot, position, stamp_ns, self.config.base_frame), stamp_ns)

    def publish_command(self, key: str, position: Sequence[float], stamp_ns: int) -> None:
        """Joint targets (robot order) of ``key``: ``policy``, ``baseline`` or ``sent``."""
        if key not in ("policy", "baseline", "sent"):
            raise ValueError(f"publish_command: {key!r} is not a command channel")
        if self.subscribed(key):
            self._log(key, convert.joint_states(self._names, position, stamp_ns=stamp_ns), stamp_ns)

    def publish_interventions(self, entries: Sequence[dict[str, str]], stamp_ns: int) -> None:
        self.interventions_total += len(entries)
        self._log("interventions", convert.interventions(stamp_ns, entries, self.interventions_total), stamp_ns)

    def publish_shield_status(self, level: int, message: str, values: dict[str, str], stamp_ns: int) -> None:
        self._log("shield_status", convert.shield_status(stamp_ns, level, message, values), stamp_ns)

    def publish_goal(self, position: Sequence[float], frame: str, stamp_ns: int) -> None:
        self._log("goal", convert.goal_scene(position, frame or self.robot.base_link, stamp_ns), stamp_ns)

    def publish_object(self, position: Sequence[float], orientation_xyzw: Sequence[float], frame: str,
                       stamp_ns: int) -> None:
        self._log("object", convert.object_scene(position, orientation_xyzw, frame or self.robot.base_link,
                                                 stamp_ns), stamp_ns)

    def close(self) -> None:
        self.server.stop()
