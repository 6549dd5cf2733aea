"""One recorded session (a rosbag2 bag) -> its policy cycles (ROS-free, rosbags): the bag checked
(a recording of this stack, else refused) and its topics read in one pass, the joint states in
robot order, the session's bundle (its recorded identity against the one given), and per policy
cycle the state it acted on, its goal, the tracked object and the puck's speed, the policy's
observation and proposal (from its records, or none: rebuilt later) and the command the shield
executed after it with its interventions.

What becomes of the cycles (transitions, episodes, rewards) is :mod:`simreal_ros.dataset.build`,
whose docstring says what a bag gives and what is refused.
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
from simreal_ros.dataset import INTERVENTION_KINDS, DatasetError

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


def _open_bag(bag: Path) -> tuple[dict[str, Any], dict[str, tuple[str, int]], str, bool, dict[str, list]]:
    """(checked metadata, {topic: (type, messages)}, the state topic, whether the policy node's
    records are in it, {topic: [(log ns, message)]}) of a recording of this stack; any other bag
    is refused (one line naming it and why)."""
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
    return meta, topics, state_topic, has_records, data


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


def _puck_speed(ot: np.ndarray, op: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Planar speed of the tracked puck at the times ``at``: the displacement across a window of
    +-SPEED_WINDOW_S around each (offline: centred, so a steady deceleration is not lagged; wide,
    so tracker noise of a few mm does not swamp the task's success speed)."""
    j0 = np.maximum(_latest(ot, at - SPEED_WINDOW_S), 0)
    j1 = np.maximum(_latest(ot, at + SPEED_WINDOW_S), 0)
    dt = ot[j1] - ot[j0]
    dist = np.linalg.norm(op[j1, :2] - op[j0, :2], axis=1)
    return np.where(dt > 0, dist / np.where(dt > 0, dt, 1.0), 0.0)


def _met(c: _Cycles, goal: np.ndarray, since: float, until: float) -> bool:
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
    speed = _puck_speed(ot, op, ot[idx])
    dist = np.linalg.norm(op[idx, :2] - goal[:2], axis=1)
    fell = op[idx, 2] < TABLE_TOP - FALL_DEPTH
    return any(push_success(d, v, f, spec.success_radius, spec.success_speed) for d, v, f in zip(dist, speed, fell))


class _CycleReader:
    """Reads one bag's cycles for the session's bundle (``manifest``), task and robot, counting
    what it skips, drops or fills in into ``counts`` (the dataset's provenance)."""

    def __init__(self, manifest: Any, task: str, robot: Any, counts: dict[str, Any]) -> None:
        self.manifest, self.task, self.robot, self.counts = manifest, task, robot, counts

    def cycles(self, bag: Path, data, st, q, dq, has_records: bool) -> _Cycles:
        """The cycles of ``bag`` (``data``: its messages; ``st, q, dq``: its states): from the policy
        node's records, or without them at the sent commands (observations rebuilt later)."""
        return self._record_cycles(bag, data, st, q, dq) if has_records else self._rebuilt_cycles(bag, data, st, q, dq)

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
            speed = _puck_speed(ot, op, np.where(missing, obj_t, ot[np.maximum(oi, 0)]))
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
            obj, speed = op[oi], _puck_speed(ot, op, ot[oi])
        if len(t) < 2:
            raise DatasetInputError(f"{bag}: fewer than 2 cycles with a state, a goal"
                                    f"{' and an object pose' if self.task == 'push' else ''} before the sent command")
        self.counts["cycles"] += len(t)
        krows = np.array([_kind_row(kinds[i]) for i in keep])
        n_act = self.manifest.action_dim
        return _Cycles(t, st[si], q[si], dq[si], None, np.full((len(t), n_act), np.nan), goal, obj, speed,
                       (ot, op) if obj is not None else None, cmd[keep], krows, ["observations rebuilt from the recorded states with the bundle's terms"])
