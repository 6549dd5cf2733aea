"""Session datasets (issue 13, "Sessions to datasets"): the Minari writer and the reader API
(:mod:`simreal_ros.dataset`) other commands (finetune, ope) build on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simreal_ros.dataset import INTERVENTION_KINDS, DatasetError, DatasetMeta, Transitions, load, read_meta, write
from simreal_ros.policy.action import limit_change

JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))


def _meta(**kw) -> DatasetMeta:
    base = dict(task="push", robot="panda", joint_names=JOINTS, obs_terms=("joint_pos", "joint_vel", "tool_xy"),
                obs_sizes=(7, 7, 2), action_type="tool_planar_delta", action_scale=0.02, action_clip=1.0,
                action_max_change=None, control_rate_hz=10.0, bundle_name="b", bundle_hash="0" * 64,
                observation_source="policy_records", provenance={"bags": [{"path": "x", "sha256": "y"}]})
    return DatasetMeta(**{**base, **kw})


def _transitions(lengths=(5, 7), seed=0) -> Transitions:
    """Episodes of random rows, consistent as recorded data is (next observation = next row's)."""
    rng = np.random.default_rng(seed)
    meta = _meta()
    obs, nxt, ep, term, to = [], [], [], [], []
    for k, n in enumerate(lengths):
        o = rng.normal(size=(n + 1, meta.obs_dim))
        obs.append(o[:-1])
        nxt.append(o[1:])
        ep.append(np.full(n, k))
        term.append(np.r_[np.zeros(n - 1, bool), k == 0])
        to.append(np.r_[np.zeros(n - 1, bool), k != 0])
    n = sum(lengths)
    prop = rng.uniform(-1, 1, (n, 2))
    has = rng.uniform(size=n) > 0.3
    prop[~has] = np.nan
    kinds = rng.uniform(size=(n, len(INTERVENTION_KINDS))) > 0.8
    return Transitions(observations=np.concatenate(obs), actions=rng.uniform(-1, 1, (n, 2)), proposed_actions=prop,
                       rewards=rng.normal(size=n), next_observations=np.concatenate(nxt),
                       terminals=np.concatenate(term), timeouts=np.concatenate(to), intervened=kinds.any(axis=1),
                       intervention_kinds=kinds, has_proposal=has, stamps=100.0 + 0.1 * np.arange(n),
                       state_stamps=100.0 + 0.1 * np.arange(n) - 0.004, episode=np.concatenate(ep), meta=meta)


def test_written_dataset_opens_with_minari_and_reads_back_exactly(tmp_path, monkeypatch):
    import minari

    t = _transitions()
    out = write(t, tmp_path / "session_ds")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = minari.load_dataset("session_ds")
    assert ds.total_episodes == 2 and ds.total_steps == len(t)
    first = next(iter(ds.iterate_episodes()))
    assert np.array_equal(first.observations[:-1], t.observations[:5])
    assert np.array_equal(first.observations[-1], t.next_observations[4])
    u = load(out)
    assert u.meta == t.meta and read_meta(out) == t.meta
    for name in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts", "intervened",
                 "intervention_kinds", "has_proposal", "stamps", "state_stamps", "episode"):
        assert np.array_equal(getattr(u, name), getattr(t, name)), name
    assert np.array_equal(np.isnan(u.proposed_actions), np.isnan(t.proposed_actions))
    assert np.array_equal(u.proposed_actions[u.has_proposal], t.proposed_actions[t.has_proposal])
    assert u.episode_starts.tolist() == [0, 5]


def test_reader_refuses_other_task_robot_observation_and_non_datasets(tmp_path):
    out = write(_transitions(), tmp_path / "ds")
    with pytest.raises(DatasetError, match="is of task 'push', not 'reach'"):
        load(out, task="reach")
    with pytest.raises(DatasetError, match="recorded on robot 'panda'"):
        load(out, robot=("fr3_joint1",))
    with pytest.raises(DatasetError, match="observes"):
        load(out, obs_terms=("joint_pos",))
    with pytest.raises(DatasetError, match="not a dataset directory"):
        load(tmp_path)
    with pytest.raises(DatasetError, match="exists"):
        write(_transitions(), out)


def test_writer_refuses_inconsistent_transitions(tmp_path):
    t = _transitions()
    t.timeouts[2] = True  # an episode closed in its middle
    with pytest.raises(DatasetError, match="exactly one terminal or timeout"):
        write(t, tmp_path / "ds")
    t = _transitions()
    t.next_observations[1] += 1.0
    with pytest.raises(DatasetError, match="next row's observation"):
        write(t, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def _true_episode(name, env, expert):
    """One episode of ``env`` under ``expert``: true states after the reset and every step, the
    measured velocities, the true puck and its planar speed (push), actions, rewards, terminations."""
    ep = {k: [] for k in ("q", "dq", "meas", "obj", "speed", "act", "cut", "reward", "terminated")}

    def snap():
        st = env.arm.true_state()
        ep["q"].append(st.position.copy())
        ep["dq"].append(st.velocity.copy())
        ep["meas"].append(env.measurement.velocity.copy())
        if name == "push":
            p, v = env.puck_state()
            ep["obj"].append(p)
            ep["speed"].append(np.linalg.norm(v[:2]))

    env.reset(seed=5)
    snap()
    last = np.zeros(env.action_space.shape)
    for k in range(80):
        a = np.clip(expert(env, last) + (0.3 * np.sin(k) if name == "reach" else 0.0), -1.0, 1.0)
        _, r, terminated, truncated, _ = env.step(a)
        ep["cut"].append(a - env._last_action)  # what the env's declared filter (action.max_change) cut
        a = env._last_action.copy()  # the action executed: after the filter
        ep["act"].append(a)
        ep["reward"].append(r)
        ep["terminated"].append(terminated)
        last = a
        snap()
        if terminated or truncated:
            break
    return {k: np.array(v) for k, v in ep.items()}


@pytest.mark.parametrize("name", ["reach", "push"])
def test_rewards_from_states_equal_the_envs(name):
    """The builder's reward (cycle_status + transition_reward, the same simreal_ros.sim.rewards the
    envs call) on an episode's true states equals the env's reward; the residual is MuJoCo's site
    and geom positions lagging qpos by one physics step (the env reads those, the builder FK)."""
    from simreal_ros.dataset.build import cycle_status, transition_reward
    from simreal_ros.sim.env import ReachEnv
    from simreal_ros.sim.push_env import PushEnv
    from simreal_ros.training.imitation import reach_expert
    from simreal_ros.training.tasks import push_expert

    env, expert, tol = (ReachEnv(), reach_expert, 5e-3) if name == "reach" else (PushEnv(), push_expert, 5e-4)
    ep = _true_episode(name, env, expert)
    goal = np.tile(env.goal_point if name == "push" else env.goal, (len(ep["q"]), 1))
    status = cycle_status(name, env.robot, ep["q"], ep["dq"], goal, ep["obj"] if name == "push" else None,
                          ep["speed"] if name == "push" else None, getattr(env, "frame", None))
    acts = ep["act"]
    n = len(acts)
    mine = np.array([transition_reward(name, status, i, acts[i], acts[i - 1] if i else 0 * acts[0], ep["meas"][i + 1],
                                       acts[i - 2] if i > 1 else 0 * acts[0], ep["cut"][i]) for i in range(n)])
    assert np.max(np.abs(mine - ep["reward"])) < tol
    assert status["terminal"][1:].tolist() == ep["terminated"].tolist()
    if name == "push":
        assert ep["terminated"][-1]  # the episode ended at the goal, and the builder says so
    # an action one step off does not pass: the action-rate terms differ by more than the tolerance
    shifted = np.array([transition_reward(name, status, i, acts[i - 1] if i else acts[0], 0 * acts[0],
                                          ep["meas"][i + 1]) for i in range(n)])
    assert np.max(np.abs(shifted - ep["reward"])) > 10 * tol


# ---------------------------------------------------------------------- sessions through the graph
def _mcap(bag, topics):
    """{topic: [decoded message]} read with the mcap library and mcap_ros2's decoder (not rosbags)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = {t: [] for t in topics}
    for f in sorted(bag.glob("*.mcap")):
        with open(f, "rb") as fh:
            for _s, ch, _m, msg in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
                    topics=list(topics)):
                out[ch.topic].append(msg)
    return out


def _sec(msg) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def _at(stamps: np.ndarray, t: float) -> int:
    """The index of stamp ``t`` (float seconds since 1970 resolve 0.24 us)."""
    i = int(np.argmin(np.abs(stamps - t)))
    assert abs(stamps[i] - t) < 2e-6, (t, stamps[i])
    return i


def _copy_bag(src, dst, drop=()):
    """A copy of bag ``src`` without the topics ``drop`` (raw CDR copied as recorded)."""
    from rosbags.rosbag2 import Reader

    from simreal_ros.bag import BagWriter

    with Reader(src) as r, BagWriter(dst, status_interval_s=0) as w:
        conns = [c for c in r.connections if c.topic not in drop]
        for c in conns:
            w.add_topic(c.topic, c.msgtype)
        for c, t, raw in r.messages(connections=conns):
            w.write(c.topic, raw, t)
    return dst


@pytest.fixture(scope="module")
def push_session(tmp_path_factory):
    """`simreal sim --task push --shield-mode shadow` with the shipped push policy, every node its
    own process: the scripted pusher drives, the policy proposes beside it; two goals."""
    from simreal_ros.bringup.graph import GraphOptions, build_graph
    from simreal_ros.bringup.session import run_session

    tmp = tmp_path_factory.mktemp("push_session")
    opts = GraphOptions(task="push", shield_mode="shadow", output_dir=str(tmp), bag_name="run")
    s = run_session(build_graph(opts), opts, tmp / "logs", goals=2, duration=0.0, goal_timeout=60.0,
                    processes=True, progress=False)
    assert s["error"] is None and s["goals_reached"] >= 1, s
    return tmp / "run", s["goals"]


@pytest.mark.ros
def test_shadow_push_session_becomes_a_minari_dataset_matching_the_bag(push_session, tmp_path, monkeypatch):
    push_session, session_goals = push_session
    import minari

    from simreal_ros.cli import main as simreal
    from simreal_ros.policy.bundle import content_hash, load_bundle
    from simreal_ros.resources import resource
    from simreal_ros.robot import load_robot

    robot = load_robot()
    out = tmp_path / "push_ds"
    assert simreal(["dataset", str(push_session), "--out", str(out)]) == 0
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    ds = minari.load_dataset("push_ds")
    t = load(out, task="push", robot=robot)
    assert ds.total_steps == len(t) > 10 and ds.total_episodes == len(t.episode_starts)  # 2 goals: 25 steps seen
    bundle = load_bundle(resource("policies", "push_default"), robot, load_model=False)
    m = bundle.manifest
    assert t.meta.bundle_hash == content_hash(bundle) and t.meta.observation_source == "policy_records"
    assert t.meta.provenance["bags"][0]["controller"] == "baseline"  # shadow: the pusher drove
    assert t.meta.obs_terms == tuple(m.term_names) and t.meta.action_type == "tool_planar_delta"
    # every goal the session reached (judged on the true puck) ended its episode terminal, unless it
    # was met before two policy cycles acted on it (the metadata says so; the first goal is, when the
    # puck happens to be there as it comes); a step that paid the success term ended one
    goals = t.meta.provenance["bags"][0]["goals"]
    for g in session_goals:
        mine = [x for x in goals if np.allclose(x["goal"][:2], g["goal"][:2], atol=1e-6)]
        assert len(mine) == 1, (g, goals)
        if g["reached"]:
            assert mine[0]["outcome"] in ("terminal", "met before a transition"), (g, mine)
            assert mine[0]["outcome"] == "terminal" or mine[0]["transitions"] == 0, mine
    assert int(t.terminals.sum()) == sum(x["outcome"] == "terminal" for x in goals) >= 1
    assert np.all(t.terminals[t.rewards > 9.0])

    # the bag read independently (mcap + mcap_ros2): the policy's records, states, poses, sent commands
    bag = _mcap(push_session, ["/simreal/policy/record", "/simreal/state_estimate", "/simreal/object_pose",
                               "/simreal/shield/sent", "/simreal/goal"])
    recs = []
    for msg in bag["/simreal/policy/record"]:
        f = {d.label: np.asarray(msg.data[d.stride:d.stride + d.size]) for d in msg.layout.dim}
        if f["skip"][0] == 0:
            recs.append(f)
    rec_t = np.array([f["stamp"][0] for f in recs])
    states, poses = bag["/simreal/state_estimate"], bag["/simreal/object_pose"]
    state_t, pose_t = np.array([_sec(x) for x in states]), np.array([_sec(x) for x in poses])
    sl = m.term_slices()
    frame = m.planar_frame(robot)
    missing_pose = 0
    first_pose = pose_t.min()
    for i in range(len(t)):
        rec = recs[_at(rec_t, t.stamps[i])]
        assert np.array_equal(t.observations[i], rec["observation"])  # the observation exactly as recorded
        assert np.array_equal(t.proposed_actions[i], rec["action"]) and t.has_proposal[i]
        # the action: the raw output clipped, then moved at most action.max_change from the last one
        # (the observation's last_action term)
        last = rec["observation"][sl["last_action_xy"]]
        assert np.allclose(rec["action"], limit_change(np.clip(rec["raw_action"], -m.action_clip, m.action_clip),
                                                       last, m.action_max_change), atol=1e-12)
        # ... and as built: from the estimate the record names (by joint name), the puck pose it names
        st = states[_at(state_t, rec["state_stamp"][0])]
        q = np.array([st.position[list(st.name).index(j)] for j in robot.joint_names])
        assert np.allclose(rec["observation"][sl["joint_pos"]], q - robot.ready_pose, atol=1e-12)
        assert np.allclose(rec["observation"][sl["tool_xy"]], frame.tip_position(robot, q)[:2], atol=1e-12)
        j = int(np.argmin(np.abs(pose_t - rec["object_stamp"][0])))
        if abs(pose_t[j] - rec["object_stamp"][0]) > 2e-6:  # that pose did not reach the recorder:
            assert rec["object_stamp"][0] < first_pose  # only before it subscribed (it loses none after)
            missing_pose += 1
            continue
        pose = poses[j]
        assert np.allclose(rec["observation"][sl["object_xy"]], [pose.pose.position.x, pose.pose.position.y])
    # the builder counts every cycle it kept (its state in the bag), also those that start no
    # transition (no sent command yet): count the same set here
    from simreal_ros.dataset.cycles import STAMP_MATCH_S

    kept = [r for r in recs if np.min(np.abs(state_t - r["state_stamp"][0])) <= STAMP_MATCH_S]
    lacking = sum(int(np.min(np.abs(pose_t - r["object_stamp"][0])) > STAMP_MATCH_S) for r in kept)
    assert missing_pose <= lacking == t.meta.provenance["counts"].get("object_pose_not_in_bag", 0)
    # executed actions: the last sent command after each cycle, its tip through the plane minus the
    # previous one's (the measured tip at an episode's start), over the scale
    sent_t = np.array([_sec(s) for s in bag["/simreal/shield/sent"]])
    sent = [np.array([s.position[list(s.name).index(j)] for j in robot.joint_names]) for s in bag["/simreal/shield/sent"]]
    starts = set(t.episode_starts.tolist())
    ref = None
    for i in range(len(t)):
        # up to the next cycle: the record of the next observation (at an episode's end, not the next row's)
        end = next(f["stamp"][0] for f in recs if np.array_equal(f["observation"], t.next_observations[i]))
        k = int(np.flatnonzero(sent_t <= end + 1e-9)[-1])
        tip = frame.tip_position(robot, sent[k])[:2]
        if i in starts:
            q = t.observations[i][sl["joint_pos"]] + robot.ready_pose
            ref = frame.tip_position(robot, q)[:2]
        a = np.clip((tip - ref) / m.action_scale, -m.action_clip, m.action_clip)
        assert np.allclose(t.actions[i], a, atol=1e-9), i
        ref = tip
    # the pusher, not the policy, moved the arm: executed and proposed differ
    assert np.mean(np.linalg.norm(t.actions - t.proposed_actions, axis=1)) > 0.05


@pytest.mark.ros
def test_baseline_only_session_rebuilds_observations_with_the_given_bundle(push_session, tmp_path):
    push_session, session_goals = push_session
    from simreal_ros.dataset.build import BuildOptions, build
    from simreal_ros.dataset.cycles import DatasetInputError
    from simreal_ros.resources import resource

    bag = _copy_bag(push_session, tmp_path / "baseline_only", drop=("/simreal/policy/record", "/simreal/policy/bundle",
                                                                     "/simreal/policy/command"))
    with pytest.raises(DatasetInputError, match="no policy records .* pass --bundle"):
        build([bag])
    bundle = str(resource("policies", "push_default"))
    t = build([bag], BuildOptions(bundle=bundle))
    assert t.meta.observation_source == "rebuilt" and not t.has_proposal.any()
    reached = sum(g["reached"] for g in session_goals)
    assert np.all(np.isnan(t.proposed_actions)) and int(t.terminals.sum()) <= reached
    assert "rebuilt" in " ".join(t.meta.provenance["bags"][0]["notes"])
    # last_action_xy is the previous executed action (the env's meaning) inside an episode
    sl = slice(t.meta.obs_sizes[0] + sum(t.meta.obs_sizes[1:-1]), None)
    inner = np.flatnonzero(np.diff(t.episode) == 0)
    assert np.allclose(t.observations[inner + 1][:, sl], t.actions[inner])
    # the state terms are the recorded estimate's (read with mcap) at each row's state stamp
    from simreal_ros.robot import load_robot

    robot = load_robot()
    states = _mcap(push_session, ["/simreal/state_estimate"])["/simreal/state_estimate"]
    state_t = np.array([_sec(x) for x in states])
    for i in range(len(t)):
        st = states[_at(state_t, t.state_stamps[i])]
        order = [list(st.name).index(j) for j in robot.joint_names]
        assert np.allclose(t.observations[i][:7], np.asarray(st.position)[order] - robot.ready_pose, atol=1e-12)
        assert np.allclose(t.observations[i][7:14], np.asarray(st.velocity)[order], atol=1e-12)
    # a bundle other than the recorded one is refused, naming both
    with pytest.raises(DatasetInputError, match="recorded with bundle 'push_default'"):
        build([push_session], BuildOptions(bundle=str(resource("policies", "reach_default"))))


@pytest.mark.ros
def test_bad_bags_are_refused_naming_them(push_session, tmp_path, capsys):
    push_session, _ = push_session
    from simreal_ros.bag import BagWriter
    from simreal_ros.cli import main as simreal

    def refused(bag, match, *extra):
        assert simreal(["dataset", str(bag), "--out", str(tmp_path / "never"), *extra]) == 2
        err = capsys.readouterr().err
        assert match in err and str(bag) in err and "Traceback" not in err, err
        assert not (tmp_path / "never").exists()

    with BagWriter(tmp_path / "empty", status_interval_s=0) as w:
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    refused(tmp_path / "empty", "empty bag")
    with BagWriter(tmp_path / "chatter", status_interval_s=0) as w:
        w.add_topic("/chatter", "std_msgs/msg/String")
        w.write("/chatter", bytes([0, 1, 0, 0, 3, 0, 0, 0, 104, 105, 0, 0]), 1)
    refused(tmp_path / "chatter", "not a recording of this stack")
    refused(_copy_bag(push_session, tmp_path / "no_shield", drop=("/simreal/shield/sent",)), "no shield records")
    # another robot: the same session with the joints renamed
    from rosbags.rosbag2 import Reader

    from simreal_ros.bag.types import typestore

    ts = typestore()
    with Reader(push_session) as r, BagWriter(tmp_path / "fr3", status_interval_s=0) as w:
        conns = [c for c in r.connections if c.topic in ("/joint_states", "/simreal/state_estimate", "/simreal/goal",
                                                         "/simreal/shield/sent", "/simreal/object_pose")]
        for c in conns:
            w.add_topic(c.topic, c.msgtype)
        for c, t, raw in r.messages(connections=conns):
            if c.msgtype == "sensor_msgs/msg/JointState":
                msg = ts.deserialize_cdr(raw, c.msgtype)
                msg.name = [n.replace("panda", "fr3") for n in msg.name]
                raw = ts.serialize_cdr(msg, c.msgtype)
            w.write(c.topic, raw, t)
    refused(tmp_path / "fr3", "not the joints of panda", "--bundle", "policies/push_default")
    refused(tmp_path / "nothing", "not a bag directory")
    out = tmp_path / "ok"
    assert simreal(["dataset", str(push_session), "--out", str(out)]) == 0
    assert simreal(["dataset", str(push_session), "--out", str(out)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="is of task 'push', not 'reach'"):
        load(out, task="reach")


# ---------------------------------------------------------------------- a session written by hand
T0 = 1_800_000_000.0  # s, the synthetic session's clock
PERIOD = 0.1  # the push bundle's policy period


def _puck_path():
    """The puck's true planar path as a function of time after T0, and the goals: it slides to 25 mm
    short of goal A, braking at 1 m/s^2 (the session moves on to B when the true puck is below the
    task's 0.02 m/s, 0.02 s before it stops; the tracked puck's speed centred on any pose before the
    next cycle is still above it); rests; slides to 10 mm short of B and rests there 0.5 s
    (B is met between two cycles, in its episode); goal C is its resting place and lasts between two
    policy cycles (met before a transition); D is never approached and the recording ends 1 s in."""
    v0, acc = 0.12, 1.0
    t_a = 0.913  # at rest, 25 mm short of A, 10 ms after the first cycle that sees B (at 0.903 s)
    t1 = t_a - v0 / acc
    a_goal = np.array([0.62, 0.0])
    p0 = a_goal - [0.025 + v0 ** 2 / (2 * acc) + v0 * t1, 0.0]
    rest_a = p0 + [a_goal[0] - 0.025 - p0[0], 0.0]
    b_goal = rest_a + [0.0, 0.10]
    tb0 = t_a + 0.5
    v1 = 0.1
    tb1 = tb0 + (0.09 - v1 ** 2 / (2 * acc)) / v1
    t_b = tb1 + v1 / acc
    rest_b = rest_a + [0.0, 0.09]

    def x(t: float) -> np.ndarray:
        if t <= 0:
            return p0.copy()
        if t <= t1:
            return p0 + [v0 * t, 0.0]
        if t <= t_a:
            s = t - t1
            return p0 + [v0 * t1 + v0 * s - 0.5 * acc * s * s, 0.0]
        if t <= tb0:
            return rest_a.copy()
        if t <= tb1:
            return rest_a + [0.0, v1 * (t - tb0)]
        if t <= t_b:
            s = t - tb1
            return rest_a + [0.0, v1 * (tb1 - tb0) + v1 * s - 0.5 * acc * s * s]
        return rest_b.copy()

    k_c = int(np.ceil((t_b + 0.5) / PERIOD))  # C starts 20 ms after a cycle, D 50 ms later
    t_c = k_c * PERIOD + 0.003 + 0.02
    goals = [(-1.0, a_goal), (t_a - 0.02, b_goal), (t_c, rest_b + [0.01, 0.0]), (t_c + 0.05, np.array([0.50, -0.15]))]
    return x, goals, t_c + 0.05 + 1.0


def _synthetic_push_bag(path: Path, first_pose_s: float = 0.25, first_sent_s: float = 0.0,
                        stall: tuple[float, float] | None = None) -> Path:
    """A push session of the shipped push bundle written as the stack records one: the policy's
    records at 10 Hz (observations built from what they name), estimates at 100 Hz, tracked puck
    poses at 50 Hz (stamped at acquisition, 10 ms latency; the recorder's first one at
    ``first_pose_s``: it subscribed late), the shield's sent commands (from the cycle at or after
    ``first_sent_s`` on), the goals (latched); no policy cycle runs in ``stall`` (from, to; s)."""
    from simreal_ros.bag import BagWriter
    from simreal_ros.bag.types import typestore
    from simreal_ros.policy.bundle import content_hash, load_bundle
    from simreal_ros.policy.executor import SKIP_REASONS
    from simreal_ros.policy.observation import ObsInputs, build_observation
    from simreal_ros.policy.record import bundle_identity, layout
    from simreal_ros.resources import resource
    from simreal_ros.robot import load_robot
    from simreal_ros.robot.mujoco_model import TABLE_TOP

    ts = typestore()
    T = ts.types
    robot = load_robot()
    b = load_bundle(resource("policies", "push_default"), robot, load_model=False)
    m = b.manifest
    q = np.asarray(robot.ready_pose, float)
    tool = m.planar_frame(robot).tip_position(robot, q)
    x, goals, end = _puck_path()
    z = TABLE_TOP + 0.015

    def header(t):
        ns = int(round((T0 + t) * 1e9))
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                        frame_id="panda_link0")

    def ns(t):
        return int(round((T0 + t) * 1e9))

    def joint_state(t):
        return T["sensor_msgs/msg/JointState"](header=header(t), name=list(robot.joint_names), position=q.copy(),
                                               velocity=np.zeros(7), effort=np.zeros(7))

    def goal_at(t):
        return [g for s, g in goals if s <= t][-1]

    JS, FA = "sensor_msgs/msg/JointState", "std_msgs/msg/Float64MultiArray"
    fields = layout(m.obs_dim, m.action_dim)
    dims = [T["std_msgs/msg/MultiArrayDimension"](label=n, size=s, stride=o) for n, s, o in fields]
    with BagWriter(path, status_interval_s=0) as w:
        for topic, kind in (("/simreal/state_estimate", JS), ("/simreal/shield/sent", JS),
                            ("/simreal/goal", "geometry_msgs/msg/PointStamped"),
                            ("/simreal/object_pose", "geometry_msgs/msg/PoseStamped"), ("/simreal/policy/record", FA),
                            ("/simreal/policy/bundle", "std_msgs/msg/String"),
                            ("/simreal/shield/interventions", "diagnostic_msgs/msg/DiagnosticArray")):
            w.add_topic(topic, kind)
        w.write("/simreal/policy/bundle", ts.serialize_cdr(T["std_msgs/msg/String"](
            data=bundle_identity(m, str(b.directory), content_hash(b), robot.name, SKIP_REASONS)),
            "std_msgs/msg/String"), ns(0.0))
        for s, g in goals:
            pt = T["geometry_msgs/msg/Point"](x=float(g[0]), y=float(g[1]), z=0.1)
            w.write("/simreal/goal", ts.serialize_cdr(T["geometry_msgs/msg/PointStamped"](header=header(s), point=pt),
                                                      "geometry_msgs/msg/PointStamped"), ns(max(s, 0.0)))
        events = []
        for j in range(int(end / 0.01) + 1):
            events.append((j * 0.01, "state"))
        for j in range(-25, int(end / 0.02) + 1):
            events.append((j * 0.02 + 0.001, "pose"))
        for k in range(int(end / PERIOD) + 1):
            events.append((k * PERIOD + 0.003, "cycle"))
        for t, what in sorted(events):
            if what == "state":
                w.write("/simreal/state_estimate", ts.serialize_cdr(joint_state(t), JS), ns(t) + 500_000)
            elif what == "pose":
                if t >= first_pose_s:
                    p = x(t)
                    pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=z),
                                                       orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
                    w.write("/simreal/object_pose", ts.serialize_cdr(T["geometry_msgs/msg/PoseStamped"](
                        header=header(t), pose=pose), "geometry_msgs/msg/PoseStamped"), ns(t) + 10_000_000)
            elif stall is None or not stall[0] <= t < stall[1]:
                st = np.floor(round((t - 0.002) / 0.01, 6)) * 0.01  # the newest estimate
                ot = np.floor(round((t - 0.011) / 0.02, 6)) * 0.02 + 0.001  # the newest pose, 10 ms late
                g = goal_at(t)
                obs = build_observation(robot, m.term_names, ObsInputs(
                    q=q, dq=np.zeros(7), goal=np.r_[g, 0.1], last_action=np.zeros(2), tool=tool.copy(),
                    object=np.r_[x(ot), z]))
                rec = np.r_[T0 + t, T0 + st, T0 + ot, 0.0, obs, 0.0, 0.0, 0.0, 0.0]
                w.write("/simreal/policy/record", ts.serialize_cdr(T[FA](layout=T["std_msgs/msg/MultiArrayLayout"](
                    dim=dims, data_offset=0), data=rec), FA), ns(t) + 1_000_000)
                if t >= first_sent_s:
                    w.write("/simreal/shield/sent", ts.serialize_cdr(joint_state(t + 0.002), JS), ns(t) + 2_500_000)
    return path


def test_goals_reached_end_terminal_and_missing_poses_come_from_the_observation(tmp_path):
    """A session written by hand (no ROS, exact): a goal the puck comes to rest at just after the
    session moved on ends its episode terminal; a goal met between two policy cycles is named in
    the metadata; cycles whose tracked pose did not reach the recorder take the object position
    their observation holds (not a later pose): every row's reward is the task's on its observations."""
    from simreal_ros.dataset.build import build
    from simreal_ros.robot.tool import load_tool
    from simreal_ros.sim.push_task import load_push_task
    from simreal_ros.sim.rewards import push_reward

    _, goals, _ = _puck_path()
    t = build([_synthetic_push_bag(tmp_path / "bag")])
    prov = t.meta.provenance["bags"][0]
    outcomes = [g["outcome"] for g in prov["goals"]]
    assert outcomes == ["terminal", "terminal", "met before a transition", "timeout"], prov["goals"]
    assert [g["cycles"] for g in prov["goals"]][2] == 0
    assert int(t.terminals.sum()) == 2 and int(t.timeouts.sum()) == 1
    assert t.meta.provenance["counts"]["goals_met_before_a_transition"] == 1
    assert t.meta.provenance["counts"]["object_pose_not_in_bag"] == 3  # cycles at 3, 103, 203 ms
    assert any("before its first recorded pose" in n for n in prov["notes"])
    # rewards from the observations alone (tool_xy, object_xy, goal_xy are exact): the success
    # term is paid at the in-episode terminal only
    spec, sl = load_push_task(), {}
    off = 0
    for name, size in zip(t.meta.obs_terms, t.meta.obs_sizes):
        sl[name] = slice(off, off + size)
        off += size
    for i in range(len(t)):
        o, o2 = t.observations[i], t.next_observations[i]
        goal = o[sl["goal_xy"]]
        d0, d1 = np.linalg.norm(o[sl["object_xy"]] - goal), np.linalg.norm(o2[sl["object_xy"]] - goal)
        last = t.actions[i - 1] if i and t.episode[i - 1] == t.episode[i] else np.zeros(2)
        r = push_reward(d1, d0, o2[sl["tool_xy"]], o2[sl["object_xy"]], False, t.actions[i], last, spec.puck_radius,
                        float(load_tool().radius))[0]
        assert t.rewards[i] - r == pytest.approx(10.0 if t.terminals[i] and i != np.flatnonzero(t.terminals)[0] else 0.0,
                                                 abs=1e-9), i


def test_cycles_before_the_first_recorded_sent_command_start_no_transition(tmp_path):
    """A recording that got the shield's sent commands only after the session's first cycles (the
    recorder subscribes a topic once it has seen its publisher; a fresh-clone CI bag did): those
    cycles have no executed action, so no row starts at one (the builder wrote them with action 0)."""
    from simreal_ros.dataset.build import build

    full = build([_synthetic_push_bag(tmp_path / "full")])
    late = build([_synthetic_push_bag(tmp_path / "late", first_sent_s=0.25)])  # cycles at 3, 103, 203 ms lack one
    assert late.stamps.min() == pytest.approx(T0 + 3 * PERIOD + 0.003, abs=1e-6)  # the first cycle with one
    assert late.meta.provenance["counts"]["cycles_without_a_sent_command"] == 3
    assert full.meta.provenance["counts"]["cycles_without_a_sent_command"] == 0
    # every other row is as in the full recording: the late one only lacks its first three cycles' rows
    keep = full.stamps >= late.stamps.min() - 1e-9
    assert np.array_equal(full.stamps[keep], late.stamps) and np.allclose(full.actions[keep][1:], late.actions[1:])


def test_a_stall_after_a_goal_was_met_starts_no_second_episode_of_it(tmp_path):
    """Push ends a goal's episode at its first success and drops that goal's later cycles; a stall
    of the policy (a gap that cuts the stretch) while the puck still rests at the met goal must not
    start it again (the builder did: a second, one-row terminal episode; a CI session's dataset had
    3 terminals for 2 goals met)."""
    from simreal_ros.dataset.build import build

    _, goals, _ = _puck_path()
    t_c = goals[2][0]  # B is met in its episode and the puck rests there until C (0.5 s on)
    plain = build([_synthetic_push_bag(tmp_path / "plain")])
    t = build([_synthetic_push_bag(tmp_path / "stalled", stall=(t_c - 0.35, t_c - 0.12))])
    outcomes = [g["outcome"] for g in t.meta.provenance["bags"][0]["goals"]]
    assert outcomes == ["terminal", "terminal", "met before a transition", "timeout"], outcomes
    assert int(t.terminals.sum()) == int(plain.terminals.sum()) == 2
    assert len(t) == len(plain)  # the stall fell among the dropped cycles


def test_a_goal_met_across_a_stall_ends_one_terminal_episode_only(tmp_path):
    """A goal the tracked puck reaches while the policy stalls (between the cycle before the stall
    and the one after it) ends its episode terminal at the stall's cut; the cycles after the stall
    under that goal are dropped like any after a success. The builder closed the episode terminal
    but went on under the goal: the puck still at the goal, the next stretch's first row ended a
    second, one-row terminal episode of it (a CI session's dataset had 3 terminals for 2 goals)."""
    from simreal_ros.dataset.build import build

    plain = build([_synthetic_push_bag(tmp_path / "plain")])
    met_b = float(plain.stamps[np.flatnonzero(plain.terminals)[1]]) - T0  # B is met after this cycle
    t = build([_synthetic_push_bag(tmp_path / "stalled", stall=(met_b + 0.001, met_b + 0.25))])
    outcomes = [g["outcome"] for g in t.meta.provenance["bags"][0]["goals"]]
    assert outcomes == ["terminal", "terminal", "met before a transition", "timeout"], outcomes
    assert int(t.terminals.sum()) == 2, t.stamps[t.terminals] - T0
    # the stall removed B's met cycle and nothing before it: B's episode ends at the same row
    assert float(t.stamps[np.flatnonzero(t.terminals)[1]]) - T0 == pytest.approx(met_b - PERIOD, abs=1e-6)
