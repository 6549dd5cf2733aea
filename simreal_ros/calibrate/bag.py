"""Recorded bags -> :class:`~simreal_ros.calibrate.session.Session` objects (ROS-free, rosbags).

What a bag gives the fitter: the driver's measured joint states (``/joint_states`` in sim, the
real driver's topic from ``config/real_driver.yaml`` on the robot; ``sensor_msgs/JointState``
mapped by joint *name* onto the robot's order) on their acquisition stamps, with the recorder's
receive times, and the commands the shield actually sent (``/simreal/shield/sent``, stamped
with the shield's step time; :func:`~simreal_ros.bag.check.stamped_commands`).

Checked, each failure one :class:`BagInputError` line naming the bag and what is wrong:
a directory that is not a bag, a bag not closed cleanly or damaged (the errors of
:mod:`simreal_ros.bag.check`, which say to run ``simreal bag recover``), a foreign bag (none
of the stack's topics), no sent commands, no joint states, another robot's joints, effort-mode
commands, states and commands stamped on different clocks (a shield that stamped its steady
clock), nothing continuous long enough. Gaps (a stalled driver, a restarted shield) split the
bag into continuous sessions; every split and everything dropped is a note.

Times: seconds since the bag's first joint-state stamp (``SourceInfo.epoch_ns``): float64
seconds since 1970 resolve only 0.24 us.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simreal_ros import topics
from simreal_ros.bag.check import STAMPED_SENT_TOPIC, BagReadError, check_bag, joint_index, read_topic, stamped_commands
from simreal_ros.bag.metadata import topic_counts
from simreal_ros.calibrate.session import Session, SessionError, SourceInfo

STATE_TOPIC = topics.JOINT_STATES
#: proposal topic -> the controller it belongs to (what drove the arm, from what the bag holds)
CONTROLLER_TOPICS = {"/simreal/excitation/command": "excitation", topics.POLICY_COMMAND: "policy",
                     "/simreal/baseline/command": "baseline"}
DIAGNOSTICS_TOPIC = topics.DIAGNOSTICS
#: the sent commands and the joint states are on one clock when their stamps are this close to
#: their receive times alike (transport and latencies are milliseconds; other clocks are years apart)
MAX_CLOCK_MISMATCH_S = 1.0
JOINT_STATE = "sensor_msgs/msg/JointState"


class BagInputError(SessionError):
    """A bag that gives no usable session (the message names the bag and what is wrong)."""


@dataclass(frozen=True)
class ReadOptions:
    """How bags are cut into sessions."""

    state_topic: str = ""  # '' : /joint_states, else the real driver's joint-state topic
    max_gap: float = 0.05  # s between joint states: a longer gap ends a session
    max_command_gap: float = 0.5  # s between sent commands: a longer gap ends a session
    min_duration: float = 3.0  # s: shorter continuous parts are dropped (noted)

    def __post_init__(self) -> None:
        for name in ("max_gap", "max_command_gap", "min_duration"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


@dataclass
class BagSessions:
    """What one bag gave: its sessions, what drove the arm, counts and notes (one line each)."""

    bag: Path
    sessions: list[Session]
    controller: str
    sha256: str
    state_topic: str
    states: int
    commands: int
    notes: list[str] = field(default_factory=list)


def content_hash(bag: Path, meta: dict[str, Any]) -> str:
    """sha256 over the bag's metadata.yaml and data files (names and bytes, in a fixed order)."""
    h = hashlib.sha256()
    for name in ["metadata.yaml", *sorted(meta.get("relative_file_paths", []))]:
        h.update(name.encode() + b"\0")
        with open(bag / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _state_topic(bag: Path, topics: dict[str, tuple[str, int]], wanted: str) -> str:
    if wanted:
        return wanted
    if STATE_TOPIC in topics:
        return STATE_TOPIC
    from simreal_ros.bringup.graph import load_real_driver

    try:
        real = load_real_driver(None)["joint_states"]
    except (OSError, ValueError):
        real = STATE_TOPIC
    return real if real in topics else STATE_TOPIC


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _joint_states(bag: Path, topic: str, msgs: list[tuple[int, Any]], robot: Any) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(stamp ns, log ns, q, dq, tau or None) in robot order, mapped by joint name."""
    joints = tuple(robot.joint_names)
    n = len(joints)
    stamps, logs = np.empty(len(msgs), np.int64), np.empty(len(msgs), np.int64)
    q, dq, tau = np.empty((len(msgs), n)), np.empty((len(msgs), n)), np.empty((len(msgs), n))
    have_tau = True
    order: tuple[str, ...] | None = None
    index: list[int] = []
    for k, (log, msg) in enumerate(msgs):
        names = tuple(str(x) for x in msg.name)
        if names != order:
            try:
                order, index = names, joint_index(names, robot)
            except ValueError as exc:
                raise BagInputError(f"{bag} {topic}: message #{k}: {exc}: recorded on another robot?") from None
        m = len(names)
        if len(msg.position) != m or len(msg.velocity) != m:
            raise BagInputError(f"{bag} {topic}: message #{k} has {len(msg.position)} positions and "
                                f"{len(msg.velocity)} velocities for {m} joint names (both are needed)")
        stamps[k], logs[k] = _stamp_ns(msg), log
        q[k] = np.asarray(msg.position, float)[index]
        dq[k] = np.asarray(msg.velocity, float)[index]
        if have_tau and len(msg.effort) == m:
            tau[k] = np.asarray(msg.effort, float)[index]
        else:
            have_tau = False
    return stamps, logs, q, dq, (tau if have_tau else None)


def _runs(t: np.ndarray, max_gap: float) -> list[tuple[float, float]]:
    """Continuous stretches [start, end] of increasing times ``t`` (a gap > max_gap ends one)."""
    if len(t) == 0:
        return []
    cut = np.flatnonzero(np.diff(t) > max_gap)
    starts = np.concatenate([[0], cut + 1])
    ends = np.concatenate([cut, [len(t) - 1]])
    return [(float(t[a]), float(t[b])) for a, b in zip(starts, ends)]


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = []
    for a0, a1 in a:
        for b0, b1 in b:
            lo, hi = max(a0, b0), min(a1, b1)
            if hi > lo:
                out.append((lo, hi))
    return sorted(out)


def _controller(bag: Path, topics: dict[str, tuple[str, int]]) -> str:
    """What drove the arm: the excitation when its proposals are in the bag, else the shield's
    most frequent source on /diagnostics (policy | baseline), else the proposals recorded."""
    counts = {c: topics.get(t, ("", 0))[1] for t, c in CONTROLLER_TOPICS.items()}
    if counts["excitation"]:
        return "excitation"
    if topics.get(DIAGNOSTICS_TOPIC, ("", 0))[1]:
        try:
            _, diags = read_topic(bag, DIAGNOSTICS_TOPIC)
        except BagReadError:
            diags = []
        sources = Counter(kv.value for _, m in diags for st in m.status if st.name == "safety_shield"
                          for kv in st.values if kv.key == "source" and kv.value in ("policy", "baseline"))
        if sources:
            return sources.most_common(1)[0][0]
    present = [c for c, n in counts.items() if n]
    return present[0] if len(present) == 1 else "unknown"


def open_checked(bag: str | Path, robot: Any, error: type[Exception]) -> tuple[Any, Path, Any, dict[str, tuple[str, int]]]:
    """``(robot, bag, metadata, topic counts)`` of a bag the calibration reads: ``robot`` defaults to the
    package's; a bag that cannot be read raises ``error`` with the reader's one-line reason."""
    if robot is None:
        from simreal_ros.robot import load_robot

        robot = load_robot()
    bag = Path(bag)
    try:
        meta = check_bag(bag)
    except BagReadError as exc:
        raise error(str(exc)) from None
    return robot, bag, meta, topic_counts(meta)


def read_bag(bag: str | Path, robot: Any = None, options: ReadOptions | None = None) -> BagSessions:
    """Every continuous session of ``bag`` (see the module docstring).

    Raises:
        BagInputError: the bag gives no usable session; the message says why.
    """
    robot, bag, meta, topics = open_checked(bag, robot, BagInputError)
    opts = options or ReadOptions()
    if not sum(n for _, n in topics.values()):
        raise BagInputError(f"{bag}: empty bag (no messages on any of its {len(topics)} topics)")
    state_topic = _state_topic(bag, topics, opts.state_topic)
    ours = {state_topic, STAMPED_SENT_TOPIC, *CONTROLLER_TOPICS, "/simreal/state_estimate",
            "/forward_position_controller/commands"}
    if not ours & set(topics):
        raise BagInputError(f"{bag}: not a recording of this stack: none of {sorted(ours)} (it has "
                            f"{sorted(topics)[:8]}{' ...' if len(topics) > 8 else ''})")
    if topics.get(state_topic, ("", 0))[1] == 0:
        raise BagInputError(f"{bag}: no joint states on {state_topic} (the driver's measured states are needed; "
                            "--state-topic names another topic)")
    if topics[state_topic][0] != JOINT_STATE:
        raise BagInputError(f"{bag} {state_topic}: {topics[state_topic][0]} is not {JOINT_STATE}")
    if topics.get(STAMPED_SENT_TOPIC, ("", 0))[1] == 0:
        hint = (" (only the unstamped /forward_position_controller/commands: record /simreal/shield/sent)"
                if topics.get("/forward_position_controller/commands", ("", 0))[1] else "")
        raise BagInputError(f"{bag}: no sent commands on {STAMPED_SENT_TOPIC}{hint}: the commands the shield sent, "
                            "on its stamps, are what the fit replays")
    try:
        _, state_msgs = read_topic(bag, state_topic)
        kind, sent_msgs = read_topic(bag, STAMPED_SENT_TOPIC)
    except BagReadError as exc:
        raise BagInputError(str(exc)) from None
    if kind != JOINT_STATE:
        raise BagInputError(f"{bag} {STAMPED_SENT_TOPIC}: {kind} is not {JOINT_STATE}")
    if all(len(m.position) == 0 for _, m in sent_msgs) and any(len(m.effort) for _, m in sent_msgs):
        raise BagInputError(f"{bag}: the shield sent torques (effort mode): only position-mode sessions can be "
                            "identified")
    s_ns, s_log, q, dq, tau = _joint_states(bag, state_topic, state_msgs, robot)
    try:
        c_t, cmd = stamped_commands(sent_msgs, robot, "position")
    except ValueError as exc:
        raise BagInputError(f"{bag} {STAMPED_SENT_TOPIC}: {exc}") from None
    c_log = np.array([t for t, _ in sent_msgs], np.int64)
    notes: list[str] = []

    # one clock: each stream's stamps lag its receive times by milliseconds, not by another epoch
    c_ns = np.array([_stamp_ns(m) for _, m in sent_msgs], np.int64)
    lag_states = float(np.median(s_log - s_ns)) * 1e-9
    lag_sent = float(np.median(c_log - c_ns)) * 1e-9
    if abs(lag_states - lag_sent) > MAX_CLOCK_MISMATCH_S:
        raise BagInputError(
            f"{bag}: the sent commands and the joint states are stamped on different clocks (received "
            f"{lag_sent:+.3f} s and {lag_states:+.3f} s after their stamps): a shield that stamped its steady "
            "clock cannot be replayed against the driver's states")

    epoch = int(s_ns.min())
    order = np.argsort(s_ns, kind="stable")
    s_ns, s_log, q, dq = s_ns[order], s_log[order], q[order], dq[order]
    tau = tau[order] if tau is not None else None
    keep = np.concatenate([[True], np.diff(s_ns) > 0])
    if not keep.all():
        notes.append(f"{int((~keep).sum())} joint state(s) with a repeated stamp dropped")
    s_ns, s_log, q, dq = s_ns[keep], s_log[keep], q[keep], dq[keep]
    tau = tau[keep] if tau is not None else None
    st = (s_ns - epoch) * 1e-9
    recv = (s_log - epoch) * 1e-9
    ct = np.asarray(c_t - np.longdouble(epoch) / np.longdouble(1e9), dtype=float)
    corder = np.argsort(ct, kind="stable")
    ct, cmd = ct[corder], cmd[corder]
    c_recv = ((c_log - epoch) * 1e-9)[corder]
    ckeep = np.concatenate([[True], np.diff(ct) > 0])
    if not ckeep.all():
        notes.append(f"{int((~ckeep).sum())} sent command(s) with a repeated stamp dropped")
    ct, cmd, c_recv = ct[ckeep], cmd[ckeep], c_recv[ckeep]

    state_runs, cmd_runs = _runs(st, opts.max_gap), _runs(ct, opts.max_command_gap)
    if len(state_runs) > 1:
        notes.append(f"{len(state_runs) - 1} gap(s) longer than {opts.max_gap:g} s between joint states")
    if len(cmd_runs) > 1:
        notes.append(f"{len(cmd_runs) - 1} gap(s) longer than {opts.max_command_gap:g} s between sent commands")
    parts = _intersect(state_runs, cmd_runs)
    sha = content_hash(bag, meta)
    controller = _controller(bag, topics)
    sessions, short = [], []
    for a, b in parts:
        if b - a < opts.min_duration:
            short.append(b - a)
            continue
        si = np.flatnonzero((st >= a) & (st <= b))
        first = int(np.searchsorted(ct, a, side="right")) - 1  # the command holding at a
        ci = np.arange(max(first, 0), int(np.searchsorted(ct, b, side="right")))
        if len(si) < 2 or len(ci) < 2:
            short.append(b - a)
            continue
        name = bag.name if len(parts) == 1 else f"{bag.name}#{len(sessions) + 1}"
        src = SourceInfo(name, float(b - a), sha, controller, epoch_ns=epoch)
        sessions.append(Session(tuple(robot.joint_names), st[si], q[si], dq[si], None if tau is None else tau[si],
                                ct[ci], cmd[ci], "position", src, state_recv_t=recv[si],
                                cmd_recv_t=c_recv[ci]))
    if short:
        notes.append(f"{len(short)} continuous part(s) shorter than {opts.min_duration:g} s dropped "
                     f"({', '.join(f'{d:.2f} s' for d in short[:5])})")
    if not sessions:
        longest = max((b - a for a, b in parts), default=0.0)
        raise BagInputError(
            f"{bag}: too short: the longest continuous part with joint states and sent commands is {longest:.2f} s "
            f"(at least {opts.min_duration:g} s needed; {len(st)} states, {len(ct)} sent commands"
            + (f"; {'; '.join(notes)}" if notes else "") + ")")
    return BagSessions(bag, sessions, controller, sha, state_topic, len(st), len(ct), notes)


def read_bags(bags: Sequence[str | Path], robot: Any = None, options: ReadOptions | None = None) \
        -> list[BagSessions]:
    """:func:`read_bag` of each bag; the same bag twice is refused (it would count twice)."""
    out: list[BagSessions] = []
    seen: dict[str, Path] = {}
    for bag in bags:
        got = read_bag(bag, robot, options)
        if got.sha256 in seen:
            raise BagInputError(f"{bag}: the same recording as {seen[got.sha256]} (content hash {got.sha256[:12]})")
        seen[got.sha256] = Path(bag)
        out.append(got)
    return out


def sessions_of(read: Sequence[BagSessions]) -> list[Session]:
    return [s for r in read for s in r.sessions]


__all__ = ["BagInputError", "BagSessions", "ReadOptions", "content_hash", "read_bag", "read_bags", "sessions_of"]
