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

Reading a bag into its policy cycles (and those refusals) is :mod:`simreal_ros.dataset.cycles`;
this module turns the cycles into episodes of transitions with their rewards.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simreal_ros.dataset import DatasetMeta, Transitions
from simreal_ros.dataset.cycles import (
    BUNDLE_TOPIC,
    GOAL_TOPIC,
    OBJECT_TOPIC,
    SPEED_WINDOW_S,
    DatasetInputError,
    _bundle_manifest,
    _CycleReader,
    _Cycles,
    _identity,
    _met,
    _open_bag,
    _stamp,
    _states,
)


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

        meta, topics, state_topic, has_records, data = _open_bag(bag)
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
        reader = _CycleReader(self.manifest, self.task, self.robot, self.counts)
        cycles = reader.cycles(bag, data, st, q, dq, has_records)
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
                met = _met(c, p, st, until + SPEED_WINDOW_S)
                outcome = "met before a transition" if met else "no transition"
            out.append({"stamp": round(st, 6), "goal": [round(float(x), 6) for x in p], "cycles": cycles,
                        "transitions": rows, "outcome": outcome})
        return out

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
        return _met(c, c.goal[i], c.t[i], until)

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


__all__ = ["BuildOptions", "build"]
