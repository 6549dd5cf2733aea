"""Recorded sessions (rosbag2 bags) -> :class:`~simreal_ros.dataset.Transitions` (ROS-free, rosbags).

What a bag gives (``simreal sim --record``, ``bringup.launch.py record:=true``):

- cycles: the policy node's records (``/simreal/policy/record``, :mod:`simreal_ros.policy.record`),
  one per cycle that proposed a command, with the observation exactly as the node built it, its
  proposal, and the stamps of the state and object pose it acted on; the bundle's identity from
  ``/simreal/policy/bundle``. Without records (a baseline-only session) the cycles are the
  shield's sent commands at the policy rate and the observations are *rebuilt* from the recorded
  state (``/simreal/state_estimate``, else ``/joint_states``), goal and tracked object with the
  bundle given by ``bundle`` (its terms; ``last_action`` = the previous executed action);
- the executed action of a cycle: the last command the shield sent (``/simreal/shield/sent``,
  stamped) after the cycle and up to the next, mapped back into the bundle's action space
  (:func:`~simreal_ros.policy.action.command_to_action`, :func:`~simreal_ros.policy.action.planar_command_to_action`);
  its interventions from ``/simreal/shield/interventions`` (matched to the sent commands by stamp);
  a cycle with no sent command in the bag up to the next one (a recording that began late) has no
  executed action and starts no transition (counted: ``cycles_without_a_sent_command``);
- rewards: :mod:`simreal_ros.sim.rewards` at the state after the step (the state the next cycle
  acted on; for push the tracked puck on ``/simreal/object_pose``);
- episodes: one per goal (``/simreal/goal``); a gap longer than ``max_gap_periods`` policy periods
  (skipped cycles, a stall) cuts it (timeout); push ends an episode at the first success or a
  puck off the table (terminal), as :class:`~simreal_ros.sim.push_env.PushEnv` does, and the rest
  of that goal's cycles are dropped (counted); a push episode whose goal the tracked puck reached
  between its last cycle and the next (a session moves on to the next goal at once, as the true
  puck slows below the success speed; at a goal change the tracked puck is watched up to
  SPEED_WINDOW_S past the next cycle) ends terminal too (its last step's reward is that of the
  state at its last cycle). Success is judged on the tracked puck (its speed over +-0.1 s of
  tracked poses, centred), on the nominal table height. Every goal's outcome is in the bag's
  provenance (``goals``: terminal, timeout, ``met before a transition`` when the puck was at the
  goal before two policy cycles acted on it, or no transition);
- a cycle whose tracked pose is not in the bag (the recorder subscribes a topic once it sees its
  publisher, so a session's first cycles can precede its first recorded pose) takes the object
  position from its own observation (``object_xy``: exactly that pose's), never a later pose.

Refused, each with one :class:`DatasetInputError` line naming the bag: not a bag / not closed
cleanly / damaged, an empty bag, a foreign bag (none of the stack's topics, or another robot's
joints), no sent commands, no policy records and no ``bundle`` to rebuild observations with, a
bundle other than the recorded one, bags of different bundles.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simreal_ros import topics
from simreal_ros.bag.check import STAMPED_SENT_TOPIC, BagReadError, check_bag
from simreal_ros.bag.metadata import topic_counts
from simreal_ros.dataset import INTERVENTION_KINDS, DatasetError, DatasetMeta, Transitions

RECORD_TOPIC = topics.POLICY_RECORD
BUNDLE_TOPIC = topics.POLICY_BUNDLE
INTERVENTIONS_TOPIC = topics.INTERVENTIONS
GOAL_TOPIC = topics.GOAL
OBJECT_TOPIC = topics.OBJECT_POSE
STATE_TOPICS = (topics.STATE_ESTIMATE, topics.JOINT_STATES)
#: an intervention message belongs to the sent command stamped at most this long before it (the
#: shield stamps both in one cycle: the sent copy with its step time, the interventions right after)
MATCH_S = 0.005
#: a recorded state stamp matches a record's state_stamp within this (float seconds since 1970 resolve 0.24 us)
STAMP_MATCH_S = 2e-6
#: half-width of the window the tracked puck's speed is taken over (push success: slower than 2 cm/s)
SPEED_WINDOW_S = 0.1


class DatasetInputError(DatasetError):
    """A bag (or bundle) a dataset cannot be built from; the message names it and why."""


@dataclass(frozen=True)
class BuildOptions:
    """How sessions become transitions.

    Attributes:
        bundle: the bundle directory: required for baseline-only sessions (its terms rebuild the
            observations), else checked against the recorded identity (and used for the action
            semantics when the recorded directory is not on this machine).
        calibration: a calibration file (``simreal calibrate fit``'s calibration.yaml) to name in
            the provenance (the simulator the data will be mixed with).
        max_gap_periods: consecutive cycles further apart than this many policy periods cut the episode.
        robot: the robot description's name.
    """

    bundle: str | None = None
    calibration: str | None = None
    max_gap_periods: float = 1.5
    robot: str = "panda"


@dataclass
class _Cycles:
    """One bag's policy cycles in time order (arrays over cycles)."""

    t: np.ndarray  # cycle stamps (s)
    state_t: np.ndarray  # stamp of the state used (s)
    q: np.ndarray
    dq: np.ndarray
    obs: np.ndarray | None  # recorded observations (None: rebuild)
    proposed: np.ndarray  # NaN rows where none
    goal: np.ndarray  # (M, 3)
    obj: np.ndarray | None  # (M, 3) tracked object position used, push only
    obj_speed: np.ndarray | None  # (M,) tracked puck speed in the plane (m/s)
    poses: tuple[np.ndarray, np.ndarray] | None  # push: every tracked pose (stamps, positions)
    sent: np.ndarray  # (M, n) the executed command of each cycle (NaN: none yet)
    kinds: np.ndarray  # (M, K) bool
    notes: list[str] = field(default_factory=list)
    discarded: np.ndarray | None = None  # (M, A) model output clipped minus proposed (the filter's cut); None: none


def _read(bag: Path, topics: Sequence[str]) -> dict[str, list[tuple[int, Any]]]:
    """{topic: [(log ns, message)]} for the topics present, in one pass."""
    from rosbags.rosbag2 import Reader

    from simreal_ros.bag.types import typestore

    out: dict[str, list[tuple[int, Any]]] = {t: [] for t in topics}
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic in out]
            ts = typestore()
            for c, t, raw in reader.messages(connections=conns):
                out[c.topic].append((t, ts.deserialize_cdr(raw, c.msgtype)))
    except Exception as exc:  # noqa: BLE001 - a damaged bag fails in many ways; name it and say what to do
        raise DatasetInputError(f"{bag} does not read back ({type(exc).__name__}: {exc}); run: simreal bag recover "
                                f"{bag}") from None
    return out


def _stamp(msg: Any) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def _states(bag: Path, topic: str, msgs, robot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stamps, q, dq) in robot order, sorted by stamp; another robot's joints are refused."""
    joints = tuple(robot.joint_names)
    t, q, dq = np.empty(len(msgs)), np.empty((len(msgs), len(joints))), np.empty((len(msgs), len(joints)))
    order, index = None, None
    for k, (_, m) in enumerate(msgs):
        names = tuple(str(x) for x in m.name)
        if names != order:
            if sorted(names) != sorted(joints):
                raise DatasetInputError(f"{bag} {topic}: joint names {list(names)} are not the joints of "
                                        f"{robot.name} {list(joints)}: recorded on another robot?")
            order, index = names, [names.index(j) for j in joints]
        if len(m.position) != len(names) or len(m.velocity) != len(names):
            raise DatasetInputError(f"{bag} {topic}: message #{k} has {len(m.position)} positions and "
                                    f"{len(m.velocity)} velocities for {len(names)} joints")
        t[k] = _stamp(m)
        q[k] = np.asarray(m.position, float)[index]
        dq[k] = np.asarray(m.velocity, float)[index]
    o = np.argsort(t, kind="stable")
    return t[o], q[o], dq[o]


def _latest(stamps: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the last stamp <= each t (-1: none)."""
    return np.searchsorted(stamps, t, side="right") - 1


def _matching(stamps: np.ndarray, t: np.ndarray, tol: float) -> np.ndarray:
    """Index of the stamp equal to each t within ``tol`` (-1: none)."""
    i = np.clip(np.searchsorted(stamps, t), 0, max(len(stamps) - 1, 0))
    j = np.clip(i - 1, 0, max(len(stamps) - 1, 0))
    best = np.where(np.abs(stamps[j] - t) < np.abs(stamps[i] - t), j, i) if len(stamps) else np.full(len(t), -1)
    ok = np.abs(stamps[best] - t) <= tol if len(stamps) else np.zeros(len(t), bool)
    return np.where(ok, best, -1)


def _kind_row(kinds: set[str]) -> np.ndarray:
    row = np.zeros(len(INTERVENTION_KINDS), bool)
    for k in kinds:
        row[INTERVENTION_KINDS.index(k) if k in INTERVENTION_KINDS else INTERVENTION_KINDS.index("other")] = True
    return row


def _identity(bag: Path, msgs) -> dict[str, Any] | None:
    ids = []
    for _, m in msgs:
        try:
            d = json.loads(m.data)
        except ValueError:
            raise DatasetInputError(f"{bag} {BUNDLE_TOPIC}: not the policy node's JSON") from None
        if not isinstance(d, dict) or "sha256" not in d:
            raise DatasetInputError(f"{bag} {BUNDLE_TOPIC}: not the policy node's bundle identity")
        ids.append(d)
    if not ids:
        return None
    hashes = sorted({d["sha256"] for d in ids})
    if len(hashes) > 1:
        raise DatasetInputError(f"{bag}: the policy node ran {len(hashes)} different bundles "
                                f"({', '.join(h[:12] for h in hashes)}): one dataset per bundle")
    return ids[-1]


def _bundle_manifest(bag: Path, identity: dict[str, Any] | None, given: str | None, robot):
    """(manifest, bundle directory, content hash) of the session's bundle."""
    from simreal_ros.policy.bundle import BundleError, content_hash, load_bundle

    path = given or (identity or {}).get("directory")
    if path is None:
        raise DatasetInputError(f"{bag}: no policy records ({RECORD_TOPIC}) and no bundle to rebuild the observations "
                                "with: pass --bundle DIR (a baseline-only session)")
    try:
        b = load_bundle(path, robot, load_model=False)
    except BundleError as exc:
        hint = "" if given else " (the bundle recorded in the bag; pass --bundle DIR where it is on this machine)"
        raise DatasetInputError(f"{bag}: {exc}{hint}") from None
    sha = content_hash(b)
    if identity is not None and identity["sha256"] != sha:
        raise DatasetInputError(f"{bag} was recorded with bundle '{identity.get('name')}' (sha256 "
                                f"{identity['sha256'][:12]}), not {path} ('{b.manifest.name}', {sha[:12]})")
    return b.manifest, b.directory, sha


def cycle_status(task: str, robot, q: np.ndarray, dq: np.ndarray, goal: np.ndarray, obj: np.ndarray | None = None,
                 obj_speed: np.ndarray | None = None, frame=None) -> dict[str, np.ndarray]:
    """What the task's reward and termination look at, per state (arrays over states): the goal
    ``distance`` (reach: flange, FK of ``q``; push: the object's centre, ``obj``), ``success``
    (:mod:`simreal_ros.sim.rewards`; reach: flange speed J(q) dq; push: ``obj_speed``), ``fell``
    and ``terminal`` (push: success or a puck off the nominal table; reach never terminates),
    push: the tool tip in the plane (``frame``) and the object."""
    if task == "push":
        from simreal_ros.robot.mujoco_model import TABLE_TOP
        from simreal_ros.robot.tool import load_tool
        from simreal_ros.sim.push_task import load_push_task
        from simreal_ros.sim.push_world import FALL_DEPTH
        from simreal_ros.sim.rewards import push_success

        spec = load_push_task()
        dist = np.linalg.norm(obj[:, :2] - goal[:, :2], axis=1)
        fell = obj[:, 2] < TABLE_TOP - FALL_DEPTH
        success = np.array([push_success(d, v, f, spec.success_radius, spec.success_speed)
                            for d, v, f in zip(dist, obj_speed, fell)], bool)
        tool = np.array([frame.tip_position(robot, qq)[:2] for qq in q])
        return {"distance": dist, "success": success, "fell": fell, "terminal": success | fell, "tool_xy": tool,
                "object_xy": obj[:, :2], "puck_radius": spec.puck_radius, "tool_radius": float(load_tool().radius)}
    from simreal_ros.sim.rewards import REACH_SUCCESS_RADIUS, REACH_SUCCESS_SPEED, reach_success

    flange = np.array([robot.fk(qq)[:3, 3] for qq in q])
    dist = np.linalg.norm(goal - flange, axis=1)
    speed = np.array([np.linalg.norm(robot.jacobian(qq)[:3] @ v) for qq, v in zip(q, dq)])
    success = np.array([reach_success(d, v, REACH_SUCCESS_RADIUS, REACH_SUCCESS_SPEED) for d, v in zip(dist, speed)],
                       bool)
    return {"distance": dist, "success": success, "fell": np.zeros(len(q), bool), "terminal": np.zeros(len(q), bool)}


def transition_reward(task: str, status: dict[str, np.ndarray], i: int, action: np.ndarray, last_action: np.ndarray,
                      dq_after: np.ndarray, previous_action: np.ndarray | None = None,
                      discarded: np.ndarray | None = None) -> float:
    """The task's reward (:mod:`simreal_ros.sim.rewards`) of the step from state ``i`` to ``i + 1``
    of :func:`cycle_status` with ``action`` after ``last_action`` (after ``previous_action``);
    ``dq_after``: the measured joint velocities after it; ``discarded``: what the declared action
    filter cut from the proposal (reach)."""
    j = i + 1
    if task == "push":
        from simreal_ros.sim.rewards import push_reward

        return push_reward(status["distance"][j], status["distance"][i], status["tool_xy"][j], status["object_xy"][j],
                           bool(status["success"][j]), action, last_action, status["puck_radius"],
                           status["tool_radius"])[0]
    from simreal_ros.sim.rewards import reach_reward

    return reach_reward(status["distance"][j], bool(status["success"][j]), action, last_action, dq_after,
                        discarded=discarded, previous_action=previous_action)[0]


class _Builder:
    def __init__(self, opts: BuildOptions) -> None:
        from simreal_ros.robot import load_robot

        self.opts = opts
        self.robot = load_robot(opts.robot)
        self.manifest = None
        self.bundle_sha = ""
        self.bundle_dir = None
        self.source = None
        self.bags: list[dict[str, Any]] = []
        self.counts = {"cycles": 0, "skipped": {}, "rows": 0, "dropped_after_terminal": 0, "dropped_no_state": 0,
                       "episodes_cut_by_gaps": 0, "cycles_without_a_sent_command": 0}
        self.notes: list[str] = []

    # ------------------------------------------------------------------ per bag
    def add(self, bag: Path) -> list[dict[str, np.ndarray]]:
        from simreal_ros.calibrate.bag import _controller, content_hash

        try:
            meta = check_bag(bag)
        except BagReadError as exc:
            raise DatasetInputError(str(exc)) from None
        topics = topic_counts(meta)
        total = sum(n for _, n in topics.values())
        if total == 0:
            raise DatasetInputError(f"{bag}: empty bag (no messages on any of its {len(topics)} topics)")
        ours = {STAMPED_SENT_TOPIC, RECORD_TOPIC, *STATE_TOPICS, INTERVENTIONS_TOPIC, "/simreal/policy/command"}
        if not ours & {t for t, (_, n) in topics.items() if n}:
            raise DatasetInputError(f"{bag}: not a recording of this stack: none of {sorted(ours)} (it has "
                                    f"{sorted(topics)[:8]}{' ...' if len(topics) > 8 else ''})")
        if topics.get(STAMPED_SENT_TOPIC, ("", 0))[1] == 0:
            raise DatasetInputError(f"{bag}: no shield records: no sent commands on {STAMPED_SENT_TOPIC} (what the "
                                    "arm executed is what a dataset's actions are)")
        state_topic = next((t for t in STATE_TOPICS if topics.get(t, ("", 0))[1]), None)
        if state_topic is None:
            raise DatasetInputError(f"{bag}: no joint states on {' or '.join(STATE_TOPICS)}")
        has_records = topics.get(RECORD_TOPIC, ("", 0))[1] > 0
        data = _read(bag, [RECORD_TOPIC, BUNDLE_TOPIC, STAMPED_SENT_TOPIC, INTERVENTIONS_TOPIC, GOAL_TOPIC,
                           OBJECT_TOPIC, state_topic])
        identity = _identity(bag, data[BUNDLE_TOPIC])
        if identity is not None and (identity.get("robot") != self.robot.name
                                     or list(identity.get("joint_names", [])) != list(self.robot.joint_names)):
            raise DatasetInputError(f"{bag}: the policy ran on robot '{identity.get('robot')}' with joints "
                                    f"{identity.get('joint_names')}, not {self.robot.name} {list(self.robot.joint_names)}")
        if has_records and identity is None and self.opts.bundle is None:
            raise DatasetInputError(f"{bag}: policy records without the bundle's identity ({BUNDLE_TOPIC}): pass "
                                    "--bundle DIR (the bundle that ran)")
        manifest, bdir, sha = _bundle_manifest(bag, identity, self.opts.bundle, self.robot)
        if self.manifest is None:
            self.manifest, self.bundle_sha, self.bundle_dir = manifest, sha, bdir
        elif sha != self.bundle_sha:
            raise DatasetInputError(f"{bag}: recorded with bundle '{manifest.name}' ({sha[:12]}), the other bags with "
                                    f"'{self.manifest.name}' ({self.bundle_sha[:12]}): one dataset per bundle")
        source = "policy_records" if has_records else "rebuilt"
        if self.source is None:
            self.source = source
        elif source != self.source:
            raise DatasetInputError(f"{bag}: {'has' if has_records else 'has no'} policy records, unlike the other bags "
                                    "(a dataset's observations are all recorded or all rebuilt)")
        from simreal_ros.training.tasks import task_of_manifest

        self.task = task_of_manifest(manifest)
        if self.task == "push" and not data[OBJECT_TOPIC]:
            raise DatasetInputError(f"{bag}: a push session without tracked object poses on {OBJECT_TOPIC}")
        st, q, dq = _states(bag, state_topic, data[state_topic], self.robot)
        cycles = (self._record_cycles(bag, data, st, q, dq) if has_records else
                  self._rebuilt_cycles(bag, data, st, q, dq))
        self._episode_goals = []
        rows = self._rows(cycles)
        goals = self._goal_outcomes(data, cycles)
        for g in goals:
            key = "goals_" + g["outcome"].replace(" ", "_")
            self.counts[key] = self.counts.get(key, 0) + 1
        self.bags.append({"path": str(bag), "sha256": content_hash(bag, meta), "controller": _controller(bag, topics),
                          "state_topic": state_topic, "duration_s": round(float(cycles.t[-1] - cycles.t[0]), 3)
                          if len(cycles.t) else 0.0, "cycles": int(len(cycles.t)),
                          "transitions": int(sum(len(r["rewards"]) for r in rows)), "notes": cycles.notes,
                          "goals": goals})
        return rows

    def _goal_outcomes(self, data, c: _Cycles) -> list[dict[str, Any]]:
        """Per goal of the bag (``/simreal/goal``, in time order): its stamp and point, its policy
        cycles and transitions, and its outcome: ``terminal`` (an episode of it ended at the task's
        end), ``timeout``, ``met before a transition`` (push: the tracked puck was at the goal
        before two policy cycles had acted on it, so the dataset holds no step of it) or ``no
        transition`` (fewer than two cycles, not met)."""
        msgs = sorted(((_stamp(m), (m.point.x, m.point.y, m.point.z)) for _, m in data[GOAL_TOPIC]), key=lambda x: x[0])
        goals: list[tuple[float, np.ndarray]] = []
        for st, p in msgs:
            if not goals or np.linalg.norm(np.subtract(p, goals[-1][1])) > 1e-9:  # a latched goal seen twice
                goals.append((st, np.array(p, float)))
        dims = slice(0, 2) if self.task == "push" else slice(0, 3)
        out = []
        for k, (st, p) in enumerate(goals):
            def same(g: np.ndarray, p: np.ndarray = p) -> bool:  # the goal as the cycles observed it
                return float(np.linalg.norm(g[dims] - p[dims])) < 1e-9

            cycles = int(sum(1 for g in c.goal if same(g)))
            eps = [(n, term) for g, n, term in self._episode_goals if same(g)]
            rows = int(sum(n for n, _ in eps))
            if any(term for _, term in eps):
                outcome = "terminal"
            elif eps:
                outcome = "timeout"
            else:
                until = goals[k + 1][0] if k + 1 < len(goals) else math.inf
                met = self._met(c, p, st, until + SPEED_WINDOW_S)
                outcome = "met before a transition" if met else "no transition"
            out.append({"stamp": round(st, 6), "goal": [round(float(x), 6) for x in p], "cycles": cycles,
                        "transitions": rows, "outcome": outcome})
        return out

    def _met(self, c: _Cycles, goal: np.ndarray, since: float, until: float) -> bool:
        """Push: a tracked puck pose stamped after ``since`` and up to ``until`` is a success for
        ``goal`` (:func:`~simreal_ros.sim.rewards.push_success`, the puck's centred speed)."""
        if c.poses is None:
            return False
        from simreal_ros.robot.mujoco_model import TABLE_TOP
        from simreal_ros.sim.push_task import load_push_task
        from simreal_ros.sim.push_world import FALL_DEPTH
        from simreal_ros.sim.rewards import push_success

        ot, op = c.poses
        idx = np.flatnonzero((ot > since) & (ot <= until))
        if not len(idx):
            return False
        spec = load_push_task()
        speed = self._puck_speed(ot, op, ot[idx])
        dist = np.linalg.norm(op[idx, :2] - goal[:2], axis=1)
        fell = op[idx, 2] < TABLE_TOP - FALL_DEPTH
        return any(push_success(d, v, f, spec.success_radius, spec.success_speed) for d, v, f in zip(dist, speed, fell))

    def _goals(self, data, t: np.ndarray):
        goals = data[GOAL_TOPIC]
        if not goals:
            raise DatasetInputError("no goal on /simreal/goal")
        gt = np.array([_stamp(m) for _, m in goals])
        gp = np.array([[m.point.x, m.point.y, m.point.z] for _, m in goals])
        o = np.argsort(gt, kind="stable")
        gi = _latest(gt[o], t)
        goal = gp[o][np.maximum(gi, 0)]
        goal[gi < 0] = np.nan
        return goal

    def _objects(self, data) -> tuple[np.ndarray, np.ndarray]:
        msgs = data[OBJECT_TOPIC]
        ot = np.array([_stamp(m) for _, m in msgs])
        op = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for _, m in msgs])
        o = np.argsort(ot, kind="stable")
        return ot[o], op[o]

    @staticmethod
    def _puck_speed(ot: np.ndarray, op: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Planar speed of the tracked puck at the times ``at``: the displacement across a window of
        +-SPEED_WINDOW_S around each (offline: centred, so a steady deceleration is not lagged; wide,
        so tracker noise of a few mm does not swamp the task's success speed)."""
        j0 = np.maximum(_latest(ot, at - SPEED_WINDOW_S), 0)
        j1 = np.maximum(_latest(ot, at + SPEED_WINDOW_S), 0)
        dt = ot[j1] - ot[j0]
        dist = np.linalg.norm(op[j1, :2] - op[j0, :2], axis=1)
        return np.where(dt > 0, dist / np.where(dt > 0, dt, 1.0), 0.0)

    def _sent(self, bag: Path, data):
        from simreal_ros.bag.check import stamped_commands

        try:
            ct, cmd = stamped_commands(data[STAMPED_SENT_TOPIC], self.robot, "position")
        except ValueError as exc:
            raise DatasetInputError(f"{bag} {STAMPED_SENT_TOPIC}: {exc}") from None
        ct = np.asarray(ct, dtype=float)
        o = np.argsort(ct, kind="stable")
        ct, cmd = ct[o], cmd[o]
        kinds: list[set[str]] = [set() for _ in ct]
        for _, m in data[INTERVENTIONS_TOPIC]:
            i = int(_latest(ct, np.array([_stamp(m) + MATCH_S]))[0])
            if i < 0 or _stamp(m) - ct[i] > 2 * MATCH_S:
                continue
            for s in m.status:
                kv = {v.key: v.value for v in s.values}
                kinds[i].add(kv.get("kind", s.message))
        return ct, cmd, kinds

    def _record_cycles(self, bag: Path, data, st, q, dq) -> _Cycles:
        from simreal_ros.policy.executor import SKIP_REASONS
        from simreal_ros.policy.record import parse

        m = self.manifest
        recs = []
        skipped: dict[str, int] = self.counts["skipped"]
        for k, (_, msg) in enumerate(data[RECORD_TOPIC]):
            dims = [(d.label, int(d.size), int(d.stride)) for d in msg.layout.dim]
            try:
                r = parse(msg.data, dims, f"{bag} {RECORD_TOPIC} message #{k}")
            except ValueError as exc:
                raise DatasetInputError(str(exc)) from None
            if len(r["observation"]) != m.obs_dim or len(r["action"]) != m.action_dim:
                raise DatasetInputError(f"{bag} {RECORD_TOPIC}: records of {len(r['observation'])} observations and "
                                        f"{len(r['action'])} actions, bundle '{m.name}' has {m.obs_dim} and {m.action_dim}")
            code = int(r["skip"][0])
            if code:
                why = SKIP_REASONS[code - 1] if 0 < code <= len(SKIP_REASONS) else "unknown"
                skipped[why] = skipped.get(why, 0) + 1
                continue
            recs.append(r)
        self.counts["cycles"] += len(recs)
        if len(recs) < 2:
            raise DatasetInputError(f"{bag}: {len(recs)} policy cycle(s) proposed a command: nothing to build "
                                    "transitions from")
        t = np.array([r["stamp"][0] for r in recs])
        o = np.argsort(t, kind="stable")
        recs = [recs[i] for i in o]
        t = t[o]
        state_t = np.array([r["state_stamp"][0] for r in recs])
        si = _matching(st, state_t, STAMP_MATCH_S)
        notes = []
        if np.any(si < 0):
            notes.append(f"{int(np.sum(si < 0))} cycle(s) whose state is not in the bag dropped")
            self.counts["dropped_no_state"] += int(np.sum(si < 0))
        keep = si >= 0
        recs, t, state_t, si = [r for r, k in zip(recs, keep) if k], t[keep], state_t[keep], si[keep]
        obs = np.array([r["observation"] for r in recs])
        proposed = np.array([r["action"] for r in recs])
        discarded = np.clip(np.array([r["raw_action"] for r in recs]), -m.action_clip, m.action_clip) - proposed
        goal = self._goals(data, t)
        sl = m.term_slices()
        if "goal_pos" in sl:  # the goal the policy saw
            goal = obs[:, sl["goal_pos"]].copy()
        elif "goal_xy" in sl:
            goal[:, :2] = obs[:, sl["goal_xy"]]
        obj = speed = None
        if self.task == "push":
            ot, op = self._objects(data)
            obj_t = np.array([r["object_stamp"][0] for r in recs])
            oi = _matching(ot, obj_t, STAMP_MATCH_S)
            missing = oi < 0
            obj = op[np.maximum(oi, 0)].copy()
            speed = self._puck_speed(ot, op, np.where(missing, obj_t, ot[np.maximum(oi, 0)]))
            if missing.any():
                # the pose the policy acted on did not reach the recorder (it subscribes a topic only
                # once it has seen its publisher: the first cycles of a session; or it lost it): its
                # position is the one the observation holds (exactly the tracked pose's), its height
                # the last recorded one before it; never a later pose
                before = _latest(ot, obj_t)
                early = int(np.sum(missing & (before < 0)))
                obj[missing, 2] = op[np.maximum(before[missing], 0), 2]
                if "object_xy" in sl:
                    obj[missing, :2] = obs[missing][:, sl["object_xy"]]
                    how = "their object position is the observation's object_xy"
                else:
                    obj[missing, :2] = op[np.maximum(before[missing], 0), :2]
                    how = "their object position is the last recorded pose before theirs"
                notes.append(f"{int(missing.sum())} cycle(s) acted on an object pose the bag lacks ({early} of them "
                             f"before its first recorded pose): {how}")
                self.counts["object_pose_not_in_bag"] = self.counts.get("object_pose_not_in_bag", 0) + int(missing.sum())
        ct, cmd, kinds = self._sent(bag, data)
        sent, krows = self._executed(t, ct, cmd, kinds)
        return _Cycles(t, state_t, q[si], dq[si], obs, proposed, goal, obj, speed, (ot, op) if obj is not None else None,
                       sent, krows, notes, discarded)

    def _executed(self, t: np.ndarray, ct: np.ndarray, cmd: np.ndarray, kinds: list[set[str]]):
        """Per cycle: the last command sent after it and up to the next cycle (else the one holding
        then), and the kinds of every intervention on the commands sent in between."""
        n = len(t)
        nxt = np.r_[t[1:], t[-1] + 1.0 / self.manifest.control_rate_hz]
        hi = _latest(ct, nxt)
        lo = _latest(ct, t)
        sent = np.full((n, cmd.shape[1]), np.nan)
        krows = np.zeros((n, len(INTERVENTION_KINDS)), bool)
        for i in range(n):
            if hi[i] >= 0:
                sent[i] = cmd[hi[i]]
            got: set[str] = set()
            for j in range(max(lo[i] + 1, 0), hi[i] + 1):
                got |= kinds[j]
            krows[i] = _kind_row(got)
        return sent, krows

    def _rebuilt_cycles(self, bag: Path, data, st, q, dq) -> _Cycles:
        ct, cmd, kinds = self._sent(bag, data)
        period = 1.0 / self.manifest.control_rate_hz
        keep, last = [], -math.inf
        for i, c in enumerate(ct):  # the shield steps on each proposal: at most the policy rate
            if c - last >= 0.75 * period:
                keep.append(i)
                last = c
        keep = np.array(keep, int)
        t = ct[keep]
        si = _latest(st, t)
        ok = si >= 0
        t, keep, si = t[ok], keep[ok], si[ok]
        goal = self._goals(data, t)
        ok = ~np.isnan(goal[:, 0])
        t, keep, si, goal = t[ok], keep[ok], si[ok], goal[ok]
        obj = speed = None
        if self.task == "push":
            ot, op = self._objects(data)
            oi = _latest(ot, t)
            ok = oi >= 0
            t, keep, si, goal, oi = t[ok], keep[ok], si[ok], goal[ok], oi[ok]
            obj, speed = op[oi], self._puck_speed(ot, op, ot[oi])
        if len(t) < 2:
            raise DatasetInputError(f"{bag}: fewer than 2 cycles with a state, a goal"
                                    f"{' and an object pose' if self.task == 'push' else ''} before the sent command")
        self.counts["cycles"] += len(t)
        krows = np.array([_kind_row(kinds[i]) for i in keep])
        n_act = self.manifest.action_dim
        return _Cycles(t, st[si], q[si], dq[si], None, np.full((len(t), n_act), np.nan), goal, obj, speed,
                       (ot, op) if obj is not None else None, cmd[keep], krows, ["observations rebuilt from the recorded states with the bundle's terms"])

    # ------------------------------------------------------------------ cycles -> rows
    def _rows(self, c: _Cycles) -> list[dict[str, np.ndarray]]:
        """Episodes of transitions between consecutive cycles (see the module docstring)."""
        from simreal_ros.policy.action import command_to_action, planar_command_to_action
        from simreal_ros.policy.observation import ObsInputs, build_observation

        m, robot = self.manifest, self.robot
        period = 1.0 / m.control_rate_hz
        frame = m.planar_frame(robot) if m.action_type == "tool_planar_delta" else None
        n = len(c.t)
        # where a new stretch starts: a gap, a new goal, no executed command yet
        new = np.ones(n, bool)
        goal_cut = np.zeros(n, bool)  # cycle i has another goal than cycle i - 1
        if n > 1:
            gap = np.diff(c.t) > self.opts.max_gap_periods * period
            goal_change = np.linalg.norm(np.diff(c.goal, axis=0), axis=1) > 1e-9
            new[1:] = gap | goal_change
            goal_cut[1:] = goal_change
            self.counts["episodes_cut_by_gaps"] += int(np.sum(gap & ~goal_change))
        # A cycle after which the bag holds no sent command (the recorder got the shield's commands
        # only later) has no executed action: it starts no transition (it ends its stretch: the
        # next cycle starts a new one), and is counted. It used to start one with action 0.
        unsent = np.isnan(c.sent[:, 0])
        new |= unsent
        new[1:] |= unsent[:-1]
        self.counts["cycles_without_a_sent_command"] += int(unsent.sum())
        # executed actions and the observations (rebuilt ones need the previous executed action)
        act = np.zeros((n, m.action_dim))
        obs = c.obs.copy() if c.obs is not None else np.zeros((n, m.obs_dim))
        ref = None
        for i in range(n):
            if new[i]:
                ref = None
            if np.isnan(c.sent[i, 0]):
                act[i] = 0.0
                continue
            if frame is not None:
                if ref is None:
                    ref = frame.tip_position(robot, c.q[i])[:2]
                act[i], ref = planar_command_to_action(robot, frame, c.sent[i], ref, m.action_scale, m.action_clip)
            else:
                act[i] = command_to_action(robot, m.action_type, c.sent[i], m.action_scale, m.action_clip, c.q[i],
                                           m.default_pose)
            if c.obs is None:
                last = act[i - 1] if i > 0 and not new[i] else np.zeros(m.action_dim)
                tool = frame.tip_position(robot, c.q[i]) if frame is not None else None
                obs[i] = build_observation(robot, m.term_names, ObsInputs(
                    q=c.q[i], dq=c.dq[i], goal=c.goal[i], last_action=last, tool=tool,
                    object=None if c.obj is None else c.obj[i]))
        status = cycle_status(self.task, robot, c.q, c.dq, c.goal, c.obj, c.obj_speed, frame)
        episodes: list[dict[str, np.ndarray]] = []
        cur: list[int] = []

        def close(terminal: bool) -> None:
            if cur:
                idx = np.array(cur)
                rows = {"observations": obs[idx], "next_observations": obs[idx + 1], "actions": act[idx],
                        "proposed_actions": c.proposed[idx], "has_proposal": ~np.isnan(c.proposed[idx, 0]),
                        "intervened": c.kinds[idx].any(axis=1), "intervention_kinds": c.kinds[idx],
                        "stamps": c.t[idx], "state_stamps": c.state_t[idx], "rewards": rewards[idx]}
                rows["terminals"] = np.zeros(len(idx), bool)
                rows["timeouts"] = np.zeros(len(idx), bool)
                (rows["terminals"] if terminal else rows["timeouts"])[-1] = True
                episodes.append(rows)
                self._episode_goals.append((c.goal[idx[0]].copy(), len(idx), terminal))
            cur.clear()

        rewards = np.zeros(n)
        ended = False  # push: this goal's episode ended (success / fell); skip to the next stretch
        for i in range(n - 1):
            if new[i + 1]:  # i -> i+1 crosses a cut: i closes its stretch without a row
                # at a goal change the session moved on as the puck came to rest (judged on the true
                # puck, at once): the tracked puck's centred speed needs SPEED_WINDOW_S more of it
                until = c.t[i + 1] + (SPEED_WINDOW_S if goal_cut[i + 1] else 0.0)
                met = not ended and self._reached_after(c, i, until)
                close(met)
                # a gap under the same goal does not end the drop, and a goal met across the gap
                # starts it: its later cycles are dropped as after any success
                ended = (ended or met) and not goal_cut[i + 1]
                continue
            if ended:
                self.counts["dropped_after_terminal"] += 1
                continue
            last = act[i - 1] if i > 0 and not new[i] else np.zeros(m.action_dim)
            prev = act[i - 2] if i > 1 and not new[i] and not new[i - 1] else np.zeros(m.action_dim)
            cut = None if c.discarded is None or not np.all(np.isfinite(c.discarded[i])) else c.discarded[i]
            rewards[i] = transition_reward(self.task, status, i, act[i], last, c.dq[i + 1], prev, cut)
            cur.append(i)
            if status["terminal"][i + 1]:
                close(True)
                ended = True
        close(not ended and n > 0 and self._reached_after(c, n - 1, math.inf))
        return episodes

    def _reached_after(self, c: _Cycles, i: int, until: float) -> bool:
        """Push: the goal of cycle ``i`` was reached by the tracked puck after that cycle and before
        ``until`` (about the next cycle: a session moves on to the next goal as soon as the puck is
        there, often between two policy cycles)."""
        return self._met(c, c.goal[i], c.t[i], until)

    # ------------------------------------------------------------------ all bags
    def transitions(self, episodes: list[dict[str, np.ndarray]]) -> Transitions:
        if not episodes:
            raise DatasetInputError("the bags give no transition (no two consecutive policy cycles under one goal)")
        cat = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
        ep = np.concatenate([np.full(len(e["rewards"]), k) for k, e in enumerate(episodes)])
        m = self.manifest
        self.counts["rows"] = int(len(ep))
        cal = None
        if self.opts.calibration:
            import hashlib

            p = Path(self.opts.calibration)
            if not p.is_file():
                raise DatasetInputError(f"--calibration {p}: no such file")
            cal = {"path": str(p.resolve()), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        prov = {"bags": self.bags, "bundle": {"name": m.name, "sha256": self.bundle_sha, "directory": str(self.bundle_dir)},
                "calibration": cal, "observation_source": self.source, "counts": self.counts,
                "last_action_term": ("the policy's own previous proposal (as the node built it)"
                                     if self.source == "policy_records" else "the previous executed action"),
                "rewards": f"simreal_ros.sim.rewards ({self.task}) on the recorded states"
                           + (" and the tracked puck" if self.task == "push" else ""),
                "builder": "simreal_ros.dataset.build"}
        meta = DatasetMeta(task=self.task, robot=self.robot.name, joint_names=tuple(self.robot.joint_names),
                           obs_terms=tuple(m.term_names), obs_sizes=tuple(int(s) for _, s in m.obs_terms),
                           action_type=m.action_type, action_scale=float(m.action_scale),
                           action_clip=float(m.action_clip),
                           action_max_change=getattr(m, "action_max_change", None), control_rate_hz=float(m.control_rate_hz),
                           bundle_name=m.name, bundle_hash=self.bundle_sha, observation_source=self.source,
                           provenance=json.loads(json.dumps(prov, default=str)))
        t = Transitions(observations=cat["observations"], actions=cat["actions"],
                        proposed_actions=cat["proposed_actions"], rewards=cat["rewards"],
                        next_observations=cat["next_observations"], terminals=cat["terminals"],
                        timeouts=cat["timeouts"], intervened=cat["intervened"],
                        intervention_kinds=cat["intervention_kinds"], has_proposal=cat["has_proposal"],
                        stamps=cat["stamps"], state_stamps=cat["state_stamps"], episode=ep, meta=meta)
        t.check("built transitions")
        return t


def build(bags: Sequence[str | Path], options: BuildOptions | None = None) -> Transitions:
    """The transitions of recorded sessions (see the module docstring).

    Raises:
        DatasetInputError: a bag or bundle it cannot be built from (the message names it).
    """
    opts = options or BuildOptions()
    if not bags:
        raise DatasetInputError("no bags given")
    b = _Builder(opts)
    seen: dict[str, str] = {}
    episodes: list[dict[str, np.ndarray]] = []
    for bag in bags:
        episodes += b.add(Path(bag))
        sha = b.bags[-1]["sha256"]
        if sha in seen:
            raise DatasetInputError(f"{bag}: the same recording as {seen[sha]} (content hash {sha[:12]})")
        seen[sha] = str(bag)
    return b.transitions(episodes)


__all__ = ["BuildOptions", "DatasetInputError", "build"]
