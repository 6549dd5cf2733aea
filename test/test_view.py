"""Live view (``simreal sim --view``): the Foxglove channels, read by a real WebSocket client.

The client speaks the Foxglove WebSocket protocol with the ``websockets`` package (subprotocol
``foxglove.sdk.v1``, the successor of ``foxglove.websocket.v1`` that foxglove-sdk 0.30 serves):
serverInfo -> advertise -> subscribe -> binary message frames (opcode 1, subscription id,
log time, payload). Protobuf payloads are decoded from the FileDescriptorSet the server
advertises (google.protobuf), JSON payloads with json: nothing of the server's own code decodes.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("foxglove")
websockets_sync = pytest.importorskip("websockets.sync.client")

from simreal_ros.robot import load_robot  # noqa: E402
from simreal_ros.view import convert  # noqa: E402
from simreal_ros.view.config import ViewConfig  # noqa: E402
from simreal_ros.view.server import CHANNELS, LiveView  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SUBPROTOCOL = "foxglove.sdk.v1"


# ---------------------------------------------------------------------- a Foxglove WebSocket client
def _message_class(schema_name: str, schema_b64: str):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(schema_b64))
    pool = descriptor_pool.DescriptorPool()
    pending = list(fds.file)
    while pending:  # add each file once its dependencies are in the pool
        progress = False
        for f in list(pending):
            try:
                pool.Add(f)
            except TypeError:
                continue
            pending.remove(f)
            progress = True
        if not progress:
            raise AssertionError(f"cannot build the descriptor pool of {schema_name}")
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


class FoxgloveClient:
    """Subscribes to every advertised channel and keeps ``(log_time_ns, decoded dict)`` per topic."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        from google.protobuf.json_format import MessageToDict

        self._to_dict = MessageToDict
        end = time.monotonic() + timeout
        while True:
            try:
                self.ws = websockets_sync.connect(url, subprotocols=[SUBPROTOCOL], open_timeout=5, legacy=True)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        assert self.ws.subprotocol == SUBPROTOCOL
        self.server_info = json.loads(self.ws.recv(timeout=10))
        assert self.server_info["op"] == "serverInfo", self.server_info
        self.channels: dict[int, dict] = {}
        self.decoders: dict[int, object] = {}
        self.received: dict[str, list[tuple[int, dict]]] = {}
        self._subs: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        first = json.loads(self.ws.recv(timeout=10))
        self._on_text(first)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_text(self, msg: dict) -> None:
        if msg["op"] != "advertise":
            return
        subs = []
        for ch in msg["channels"]:
            self.channels[ch["id"]] = ch
            if ch["encoding"] == "protobuf":
                assert ch["schemaEncoding"] == "protobuf"
                self.decoders[ch["id"]] = _message_class(ch["schemaName"], ch["schema"])
            else:
                assert ch["encoding"] == "json" and ch["schemaEncoding"] == "jsonschema"
                json.loads(ch["schema"])  # a valid JSON schema document
            sub_id = len(self._subs) + 1
            self._subs[sub_id] = ch["id"]
            subs.append({"id": sub_id, "channelId": ch["id"]})
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:
                return
            if isinstance(frame, str):
                self._on_text(json.loads(frame))
                continue
            op, sub_id, log_time = struct.unpack_from("<BIQ", frame)
            if op != 1:
                continue
            ch = self.channels[self._subs[sub_id]]
            payload = frame[13:]
            if ch["encoding"] == "json":
                decoded = json.loads(payload)
            else:
                decoded = self._to_dict(self.decoders[ch["id"]].FromString(payload), preserving_proto_field_name=True)
            with self._lock:
                self.received.setdefault(ch["topic"], []).append((log_time, decoded))

    def messages(self, topic: str) -> list[tuple[int, dict]]:
        with self._lock:
            return list(self.received.get(topic, []))

    def wait_for(self, topics, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self.messages(t) for t in topics):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.ws.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _matrix(t: dict) -> np.ndarray:
    from transforms3d.quaternions import quat2mat

    tr, r = t.get("translation", {}), t.get("rotation", {})
    T = np.eye(4)
    T[:3, :3] = quat2mat([r.get("w", 0.0), r.get("x", 0.0), r.get("y", 0.0), r.get("z", 0.0)])
    T[:3, 3] = [tr.get("x", 0.0), tr.get("y", 0.0), tr.get("z", 0.0)]
    return T


def _chain(transforms: list[dict], base: str) -> dict[str, np.ndarray]:
    """Base-frame pose of every frame, composed from (parent, child) transforms."""
    by_child = {t["child_frame_id"]: t for t in transforms}
    poses = {base: np.eye(4)}

    def pose(frame: str) -> np.ndarray:
        if frame not in poses:
            t = by_child[frame]
            poses[frame] = pose(t["parent_frame_id"]) @ _matrix(t)
        return poses[frame]

    for child in by_child:
        pose(child)
    return poses


def _decode(msg) -> dict:
    """A Foxglove SDK message, encoded by the SDK and decoded here from its own schema."""
    from google.protobuf.json_format import MessageToDict

    schema = msg.get_schema()
    cls = _message_class(schema.name, base64.b64encode(schema.data).decode())
    return MessageToDict(cls.FromString(msg.encode()), preserving_proto_field_name=True)


def _urdf_links(urdf: str) -> set[str]:
    import xml.etree.ElementTree as ET

    return {link.get("name") for link in ET.fromstring(urdf).iter("link")}


# ---------------------------------------------------------------------- core, no server
@pytest.fixture(scope="module")
def robot():
    return load_robot()


def test_link_transforms_compose_to_the_package_kinematics(robot):
    rng = np.random.default_rng(3)
    urdf = Path(robot.source["urdf"]).read_text()
    for _ in range(5):
        q = rng.uniform(robot.limits.position_min, robot.limits.position_max)
        decoded = _decode(convert.link_transforms(robot, q, stamp_ns=1_500_000_007))["transforms"]
        assert {t["child_frame_id"] for t in decoded} | {robot.base_link} == _urdf_links(urdf)
        assert all(t["timestamp"] == "1970-01-01T00:00:01.500000007Z" for t in decoded)
        poses = _chain(decoded, robot.base_link)
        for joint, T in zip(robot.joints, robot.link_transforms(q)):
            np.testing.assert_allclose(poses[joint.child], T, atol=1e-6)
        np.testing.assert_allclose(poses[robot.flange_link], robot.fk(q), atol=1e-6)


def test_joint_states_and_bad_input(robot):
    msg = _decode(convert.joint_states(robot.joint_names, np.arange(7.0), None, np.ones(7), stamp_ns=3))
    assert [j["name"] for j in msg["joints"]] == list(robot.joint_names)
    assert [j.get("position", 0.0) for j in msg["joints"]] == list(range(7))
    assert all(j["effort"] == 1.0 and "velocity" not in j for j in msg["joints"])
    with pytest.raises(ValueError, match="6 positions for 7 joint names"):
        convert.joint_states(robot.joint_names, np.zeros(6))


def test_channel_topics_are_unique_and_the_layout_shows_only_served_channels(robot):
    topics = [c.topic for c in CHANNELS]
    assert len(set(topics)) == len(topics)
    layout = json.loads((REPO / "config" / "foxglove_layout.json").read_text())
    panels = layout["configById"]
    used = set()
    for cfg in panels.values():
        used |= set(cfg.get("topics", {}))
        used |= {p["value"].split(".")[0] for p in cfg.get("paths", [])}
        if "topicPath" in cfg:
            used.add(cfg["topicPath"].split(".")[0])
    assert used and used <= set(topics), used - set(topics)
    three_d = next(cfg for key, cfg in panels.items() if key.startswith("3D!"))
    assert three_d["followTf"] == robot.base_link and three_d["topics"]["/robot_description"]["visible"]

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(layout["layout"])) == sorted(panels)


# ---------------------------------------------------------------------- the server, no ROS
def test_server_serves_every_channel_and_replays_latched_ones_to_late_subscribers(robot):
    view = LiveView(robot, ViewConfig(port=0))
    try:
        assert view.config.host == "127.0.0.1"
        view.publish_goal([0.4, 0.1, 0.3], "", 5_000)  # before anyone listens, like a latched ROS goal
        client = FoxgloveClient(view.url)
        try:
            assert client.server_info["name"] == "simreal_ros"
            assert {c["topic"] for c in client.channels.values()} == {c.topic for c in CHANNELS}
            q = robot.ready_pose
            deadline = time.monotonic() + 10
            while not client.wait_for(["/robot_description", "/simreal/goal", "/tf"], timeout=0.1):
                view.publish_state(q, np.zeros(7), np.zeros(7), 7_000)  # subscriptions are asynchronous
                assert time.monotonic() < deadline, client.received.keys()
            view.publish_command("sent", q + 0.01, 8_000)
            view.publish_interventions([{"joint": "panda_joint1", "kind": "velocity", "requested": "1.0",
                                         "applied": "0.5", "source": "policy"}], 9_000)
            view.publish_shield_status(0, "active", {"mode": "active", "source": "policy"}, 9_500)
            view.publish_object([0.5, 0.0, 0.02], [0, 0, 0, 1], "", 9_900)
            assert client.wait_for(["/simreal/shield/sent", "/simreal/shield/interventions",
                                    "/simreal/shield/status", "/simreal/object"], timeout=10)
        finally:
            client.close()
    finally:
        view.close()
    urdf = client.messages("/robot_description")[0][1]["data"]
    assert urdf == Path(robot.source["urdf"]).read_text()
    t, goal = client.messages("/simreal/goal")[0]
    sphere = goal["entities"][0]["spheres"][0]["pose"]["position"]
    assert t == 5_000 and [sphere["x"], sphere["y"], sphere["z"]] == [0.4, 0.1, 0.3]
    assert goal["entities"][0]["frame_id"] == robot.base_link
    t, sent = client.messages("/simreal/shield/sent")[0]
    assert t == 8_000 and [j["position"] for j in sent["joints"]] == pytest.approx(list(q + 0.01), abs=0)
    _, iv = client.messages("/simreal/shield/interventions")[0]
    assert iv["total"] == 1 and iv["kinds"] == ["velocity"] and iv["interventions"][0]["joint"] == "panda_joint1"
    assert client.messages("/simreal/shield/status")[0][1]["mode"] == "active"


def test_a_busy_port_is_one_clear_error(robot):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            LiveView(robot, ViewConfig(port=port))


# ---------------------------------------------------------------------- simreal sim --view, end to end
@pytest.mark.ros
@pytest.mark.timeout(300)
def test_sim_with_view_serves_the_running_stack(tmp_path, robot):
    """The whole graph with view on (what `simreal sim --view` runs, each node its own process),
    a Foxglove client connected while it reaches a goal; what the client got is checked against
    the run's own bag: joint states and sent commands by stamp, proposals by value, every
    intervention, the shield's mode, the goal, and a transform for every link that composes to
    the package's forward kinematics at the same joint positions."""
    from dataclasses import replace

    from simreal_ros.bringup.graph import GraphOptions, build_graph
    from simreal_ros.bringup.report import read_bag
    from simreal_ros.bringup.session import run_session

    port = _free_port()
    opts = GraphOptions(output_dir=str(tmp_path), bag_name="run", view=True)
    nodes = [replace(n, parameters={**n.parameters, "port": port}) if n.name == "live_view" else n
             for n in build_graph(opts)]
    assert nodes[-1].name == "live_view"
    got: dict = {}

    def connect() -> None:
        try:
            got["client"] = FoxgloveClient(f"ws://127.0.0.1:{port}", timeout=120)
        except Exception as exc:  # reported by the main thread
            got["error"] = exc

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    summary = run_session(nodes, opts, tmp_path / "logs", goals=2, duration=0.0, goal_timeout=12.0,
                          processes=True, progress=False)
    thread.join(timeout=10)
    assert "error" not in got, got.get("error")
    assert "client" in got, "the Foxglove client did not connect while the graph ran"
    client = got["client"]
    client.close()
    assert summary["error"] is None, summary

    counts = {c.topic: len(client.messages(c.topic)) for c in CHANNELS}
    print("channels received:", counts)
    for topic, n in counts.items():  # no pushed object in the reaching task; interventions: see below
        if topic not in ("/simreal/object", "/simreal/shield/interventions"):
            assert n > 0, (topic, counts)

    bag = read_bag(tmp_path / "run", ["/joint_states", "/simreal/shield/sent", "/simreal/policy/command",
                                      "/simreal/shield/interventions", "/simreal/goal"])

    def stamp(m) -> int:
        return int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec)

    def by_name(names, values) -> list[float]:
        idx = {n: i for i, n in enumerate(names)}
        return [float(values[idx[n]]) for n in robot.joint_names]

    def while_recorded(items: list, recorded: dict) -> list:
        """The view's messages stamped while the recorder ran (it starts after the view, and may
        drop a few under load: those it has must agree value for value)."""
        first, last = min(recorded), max(recorded)
        inside = [(t, v) for t, v in items if first <= t <= last]
        assert sum(t in recorded for t, _ in inside) >= 0.95 * len(inside) > 10, (len(inside), len(items))
        return [(t, v) for t, v in inside if t in recorded]

    # joint states: each one the view sent is a recorded /joint_states message, value for value
    recorded = {stamp(m): by_name(m.name, m.position) for _, m in bag["/joint_states"]}
    views = client.messages("/joint_states")
    for t, msg in while_recorded(views, recorded):
        assert [j.get("name") for j in msg["joints"]] == list(robot.joint_names)
        assert [j.get("position", 0.0) for j in msg["joints"]] == recorded[t]

    # link transforms: every URDF link, composing to FK at the joint state of the same stamp
    urdf_links = _urdf_links(client.messages("/robot_description")[0][1]["data"])
    tf = {t: msg["transforms"] for t, msg in client.messages("/tf")}
    checked = 0
    for t, transforms in list(tf.items())[:: max(1, len(tf) // 20)]:
        # every URDF link, plus the base frame the goal is stamped in (config/view.yaml base_frame)
        assert {x["child_frame_id"] for x in transforms} | {robot.base_link} == urdf_links | {"base"}
        if t in recorded:
            np.testing.assert_allclose(_chain(transforms, robot.base_link)[robot.flange_link],
                                       robot.fk(recorded[t]), atol=1e-6)
            checked += 1
    assert checked > 5

    # sent commands by stamp; the policy's proposals by value
    sent = {stamp(m): by_name(m.name, m.position) for _, m in bag["/simreal/shield/sent"]}
    sent_views = [(t, [j.get("position", 0.0) for j in m["joints"]]) for t, m in client.messages("/simreal/shield/sent")]
    for t, q in while_recorded(sent_views, sent):
        assert q == sent[t], t
    proposals = {tuple(m.data) for _, m in bag["/simreal/policy/command"]}
    policy_views = [tuple(j.get("position", 0.0) for j in m["joints"]) for _, m in client.messages(
        "/simreal/policy/command")]
    # no stamps: by value; the first and last tenth may have come before the recorder subscribed or
    # after it stopped (a run's proposals start as soon as the policy is up), the rest must be in the bag
    cut = len(policy_views) // 10
    middle = policy_views[cut:len(policy_views) - cut]
    assert sum(p in proposals for p in middle) >= 0.95 * len(middle) > 10, (len(middle), len(policy_views))

    # interventions: each view message is one recorded shield cycle, entry for entry
    recorded_iv = {stamp(m): [{kv.key: kv.value for kv in st.values} for st in m.status]
                   for _, m in bag.get("/simreal/shield/interventions", [])}  # a run may need none
    view_iv = dict(client.messages("/simreal/shield/interventions"))
    for t, msg in view_iv.items():
        if t in recorded_iv:
            assert msg["interventions"] == recorded_iv[t]
    # While the view was subscribed to the shield: it matches each publisher on its own, and under
    # load the shield's can match seconds after the bridge's joint states, so the window opens at the
    # first message from the shield the client got (its sent commands); and the graph stops every
    # process at once (as `ros2 launch` does), so the shield may still brake and record after the view
    # has exited. Half a second's margin either side (stamps are sim time, paced to the wall clock).
    from_shield = [t for t, _ in sent_views]
    connected, left = min(from_shield) + 500_000_000, max(from_shield) - 500_000_000
    print("interventions recorded (ms after the view's first joint state):",
          [round((t - views[0][0]) / 1e6) for t in sorted(recorded_iv)], "; from the shield in the view:",
          round((min(from_shield) - views[0][0]) / 1e6), "to", round((max(from_shield) - views[0][0]) / 1e6))
    missed = [t for t in recorded_iv if connected < t < left and t not in view_iv]
    assert not missed, f"{len(missed)} of the shield's interventions while the client was connected were not shown"
    modes = {m["mode"] for _, m in client.messages("/simreal/shield/status")}
    assert "active" in modes, modes

    # the goal the sim bridge set
    goals = {(m.point.x, m.point.y, m.point.z) for _, m in bag["/simreal/goal"]}
    frames = {x["child_frame_id"] for x in next(iter(tf.values()))} | {robot.base_link}
    for _, msg in client.messages("/simreal/goal"):
        assert msg["entities"][0]["frame_id"] in frames  # the 3D panel can place it
        p = msg["entities"][0]["spheres"][0]["pose"]["position"]
        assert (p.get("x", 0.0), p.get("y", 0.0), p.get("z", 0.0)) in goals
