"""The push task (issue 12): scene, tool description, Gymnasium env, tracker, contact
randomization, planar actions, and the scripted pusher driving the real MuJoCo puck through
the safety shield core."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import simreal_ros.sim  # noqa: F401  (registers the envs)
from simreal_ros.baseline.pusher import ScriptedPusher
from simreal_ros.resources import resource
from simreal_ros.robot import load_robot
from simreal_ros.robot.errors import RobotDescriptionError
from simreal_ros.robot.mujoco_model import TABLE_TOP
from simreal_ros.robot.planar import PlanarFrame, PlanarReference
from simreal_ros.robot.tool import load_tool
from simreal_ros.settings import settings_of
from simreal_ros.sim.push_env import PushEnv
from simreal_ros.sim.push_task import PushTaskConfig, load_push_task
from simreal_ros.sim.randomize import ContactRanges, RandomizationRanges, load_ranges
from simreal_ros.sim.tracker import ObjectTracker
from simreal_ros.training.shielding import EpisodeShield


def test_push_env_passes_the_checker_and_is_deterministic_per_seed():
    env = gym.make("SimReal/Push-v0", randomization="default").unwrapped
    check_env(env, skip_render_check=True)
    runs = []
    for _ in range(2):
        env = PushEnv(randomization="default")
        obs, info = env.reset(seed=7)
        rng = np.random.default_rng(0)
        trace = [obs]
        for _ in range(15):
            obs, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 2))
            trace += [obs, np.array([r])]
        runs.append(np.concatenate(trace))
    np.testing.assert_array_equal(runs[0], runs[1])
    other = PushEnv(randomization="default")
    assert not np.array_equal(other.reset(seed=8)[0], runs[0][:len(other.observation_space.sample())])


def _run_pusher(env: PushEnv, seed: int, shield: bool = True):
    obs, info = env.reset(seed=seed)
    pusher = ScriptedPusher(env.task.action_scale, env.contact.puck_radius, env.tool.radius)
    es = EpisodeShield(env.robot, env.control_period, mode="shadow")
    worst = {"tip_height_error": 0.0, "tool_table_contacts": 0, "shield_kinds": set()}
    tool_geom, table_geom = env.sim.tool_geom, env.sim.table_geom
    t = 0.0
    for _ in range(env.max_steps):
        m = env.measurement
        tip = env.frame.tip_position(env.robot, m.position)
        action = pusher.act(tip, env.tracked.position, env.goal)
        target = env.reference.step(m.position, env.task.action_scale * action)
        if shield:
            out = es.step(t, m.position, m.velocity, m.stamp, None, target)
            worst["shield_kinds"].update(out.kinds)
            target = out.command
        status = env.advance(target)
        t += env.control_period
        d = env.arm.data
        worst["tool_table_contacts"] += sum(
            1 for c in d.contact[:d.ncon] if {c.geom1, c.geom2} == {tool_geom, table_geom})
        worst["tip_height_error"] = max(worst["tip_height_error"], abs(env.tool_tip()[2] - env.frame.height))
        if status["is_success"] or status["fell"]:
            break
    return status, worst


@pytest.mark.parametrize("profile", ["nominal", "default"])
def test_scripted_pusher_through_the_shield_pushes_the_puck_to_the_goal(profile):
    env = PushEnv(randomization=profile)
    results = [_run_pusher(env, seed) for seed in range(8)]
    successes = sum(s["is_success"] for s, _ in results)
    assert successes == 8, [round(s["distance"], 3) for s, _ in results]
    for _, worst in results:
        assert worst["tool_table_contacts"] == 0
        assert worst["tip_height_error"] < 0.012  # payload sag and the table offset stay small
        assert not env.arm.has_warnings()


def test_a_continued_episode_starts_where_the_last_ended_with_a_new_goal():
    """``reset(options={"continue": True})``: the tool and the puck stay where the last episode
    left them and only the goal is new (the graph's sequential goals); a puck that left the
    region the training covers, or no earlier episode, gives a fresh start; the scripted pusher
    reaches the new goals from there."""
    env = PushEnv()
    _, info = env.reset(options={"continue": True})
    assert info["continued"] is False  # nothing to continue from
    pusher = ScriptedPusher(env.task.action_scale, env.task.puck_radius, env.tool.radius)
    for episode in range(3):
        for _ in range(env.max_steps):
            tool = env.frame.tip_position(env.robot, env.measurement.position)
            _, _, term, trunc, status = env.step(pusher.act(tool, env.tracked.position, env.goal))
            if term or trunc:
                break
        assert status["is_success"], (episode, status["distance"])
        puck, tip, q = env.puck_state()[0].copy(), env.tool_tip().copy(), env.arm.true_state().position.copy()
        old_goal = env.goal.copy()
        _, info = env.reset(options={"continue": True})
        assert info["continued"] is True
        np.testing.assert_allclose(env.puck_state()[0], puck)
        np.testing.assert_allclose(env.tool_tip(), tip)
        np.testing.assert_allclose(env.arm.true_state().position, q)
        assert np.linalg.norm(env.goal - old_goal) > 1e-6
        assert np.linalg.norm(env.goal - puck[:2]) >= env.task.min_goal_distance
    env.world.place_puck([0.4, -0.3])  # out of the workspace's reach: a person would put it back
    _, info = env.reset(options={"continue": True})
    assert info["continued"] is False
    b = env.task.puck_start_box
    assert b[0] <= info["puck_start"][0] <= b[2] and b[1] <= info["puck_start"][1] <= b[3]


def test_the_puck_slides_further_on_a_slippery_table():
    """The contact randomization reaches the physics: the same push moves the puck further when
    the puck-table friction is lower."""
    travelled = {}
    for scale in (0.4, 1.6):
        ranges = RandomizationRanges(contact=ContactRanges(table_friction_scale=(scale, scale)))
        env = PushEnv(randomization=ranges)
        env.reset(seed=3, options={"puck": [0.46, 0.0], "goal": [0.66, 0.0]})
        start = env.puck_state()[0][:2]
        pusher = ScriptedPusher(env.task.action_scale, env.contact.puck_radius, env.tool.radius)
        pusher.config = type(pusher.config)(push_speed=1.0, slow_radius=0.0)
        for _ in range(40):
            m = env.measurement
            a = pusher.act(env.frame.tip_position(env.robot, m.position), env.tracked.position, env.goal)
            env.advance(env.reference.step(m.position, env.task.action_scale * a))
            if pusher.phase == "push" and np.linalg.norm(env.puck_state()[0][:2] - start) > 0.05:
                break
        for _ in range(5):  # stop pushing and let it slide
            env.advance(env.reference.step(env.measurement.position, np.zeros(2)))
        travelled[scale] = float(np.linalg.norm(env.puck_state()[0][:2] - start))
        assert env.contact.table_friction == pytest.approx(env.task.table_friction * scale)
        assert env.arm.model.pair_friction[env.sim.table_pair, 0] == pytest.approx(env.contact.table_friction)
    assert travelled[0.4] > travelled[1.6] + 0.005, travelled


def test_contact_draws_stay_in_the_profile_ranges_and_change_the_scene():
    ranges = load_ranges(profile="wide")
    c = ranges.contact
    env = PushEnv(randomization=ranges)
    seen = []
    for seed in range(6):
        _, info = env.reset(seed=seed)
        d = info["contact"]
        task = env.task
        assert c.table_friction_scale[0] <= d["table_friction"] / task.table_friction <= c.table_friction_scale[1]
        assert c.table_height_offset[0] <= d["table_height_offset"] <= c.table_height_offset[1]
        assert 0 <= d["tracker_drop_probability"] <= c.tracker_drop_probability[1]
        # the puck rests on the (moved) table with its drawn size
        z = env.puck_state()[0][2]
        assert z == pytest.approx(TABLE_TOP + d["table_height_offset"] + d["puck_height"] / 2, abs=2e-3)
        assert env.arm.model.geom_size[env.sim.puck_geom, 0] == pytest.approx(d["puck_radius"])
        seen.append(d["table_height_offset"])
    assert len(set(seen)) == 6


def test_the_tracker_is_late_noisy_and_drops_at_its_rate():
    tr = ObjectTracker(50.0, 0.0, 0.03, 0.0, np.random.default_rng(0))
    tr.reset(0.0)
    got = []
    for k in range(101):  # 1 kHz clock for 0.1 s
        t = k * 0.001
        if tr.due(t):
            tr.sample(t, [t, 0, 0], [1, 0, 0, 0])
        got += [(t, p) for p in tr.pop(t)]
    stamps = [p.stamp for _, p in got]
    assert stamps == pytest.approx([0.0, 0.02, 0.04, 0.06])  # 50 Hz; the 0.08 sample arrives at 0.11
    assert all(arrive - p.stamp == pytest.approx(0.03) for arrive, p in got)
    lossy = ObjectTracker(100.0, 0.01, 0.0, 0.5, np.random.default_rng(1))
    lossy.reset(0.0)
    kept = []
    for k in range(1000):
        t = k * 0.01
        lossy.sample(t, [0, 0, 0], [1, 0, 0, 0])
        kept += lossy.pop(t)
    assert 400 < len(kept) < 600 and lossy.dropped == 1000 - len(kept)
    assert np.std([p.position[0] for p in kept]) == pytest.approx(0.01, rel=0.15)
    with pytest.raises(ValueError, match="tracker"):
        ObjectTracker(0.0, 0.0, 0.0, 0.0, np.random.default_rng(0))


def test_planar_reference_keeps_the_tool_down_on_the_plane_and_its_lead_bounded():
    robot = load_robot()
    task = load_push_task()
    tool = load_tool()
    frame = PlanarFrame.for_robot(robot, TABLE_TOP + task.push_height, tool.tip_offset, task.workspace,
                                  task.tool_start)
    ref = PlanarReference(robot, frame, max_lead=0.03)
    q = frame.rest.copy()
    for k in range(80):  # a kinematic arm that follows every target exactly
        q = ref.step(q, [0.02, 0.015 * np.sin(k / 4)])
        tip = frame.tip_position(robot, q)
        T = robot.fk(q)
        assert tip[2] == pytest.approx(frame.height, abs=1e-4)
        assert T[:3, 2] @ np.array([0, 0, -1.0]) > np.cos(1e-3)  # tool straight down
        x0, y0, x1, y1 = task.workspace
        assert x0 - 1e-4 <= tip[0] <= x1 + 1e-4 and y0 - 1e-4 <= tip[1] <= y1 + 1e-4
        assert np.all(q >= robot.limits.position_min) and np.all(q <= robot.limits.position_max)
    # an arm that does not move: the reference gets at most max_lead ahead of it
    ref.reset()
    for _ in range(20):
        ref.step(frame.rest, [0.02, 0.0])
    assert np.linalg.norm(ref.point - frame.tip_position(robot, frame.rest)[:2]) == pytest.approx(0.03)


def test_shipped_push_task_file_shows_the_code_defaults():
    data = yaml.safe_load(resource("config", "push_task.yaml").read_text())["push_task"]
    defaults = {s.name: (list(s.default) if isinstance(s.default, tuple) else s.default)
                for s in settings_of(PushTaskConfig)}
    assert data == defaults
    assert load_push_task() == PushTaskConfig()


@pytest.mark.parametrize("edit, message", [
    ({"radius": 0.0}, "tool.radius must be > 0"),
    ({"radius": "0.01"}, "not a number"),
    ({"length": 0.01}, "at least the capsule's diameter"),
    ({"shape": "sphere"}, "is not one of"),
    ({"parent_link": "panda_link7"}, "not the robot's flange"),
    ({"colour": "red"}, "unknown keys"),
])
def test_bad_tool_files_are_refused_naming_the_file_and_key(tmp_path, edit, message):
    data = yaml.safe_load(resource("urdf", "panda_pusher.yaml").read_text())
    data["tool"].update(edit)
    path = tmp_path / "tool.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RobotDescriptionError, match=message) as err:
        load_tool(path, flange_link=load_robot().flange_link)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("edit, message", [
    ({"puck_mass": -1.0}, "puck_mass"),
    ({"goal_box": [0.6, 0.0, 0.5, 0.1]}, "goal_box"),
    ({"puck_radius": "big"}, "puck_radius"),
    ({"speed": 3.0}, "unknown keys"),
])
def test_bad_push_task_files_are_refused(tmp_path, edit, message):
    data = yaml.safe_load(resource("config", "push_task.yaml").read_text())
    data["push_task"].update(edit)
    path = tmp_path / "push.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RobotDescriptionError, match=message):
        load_push_task(path)


def test_push_scene_has_the_tool_puck_and_goal_and_reach_scene_is_unchanged():
    env = PushEnv()
    m = env.arm.model
    assert (m.nq, m.nv, m.nu) == (14, 13, 7)
    assert mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, env.sim.tool_geom) == "pusher"
    assert m.npair == 1 and m.nexclude == 1
    from simreal_ros.sim.env import ReachEnv
    r = ReachEnv().arm.model
    assert (r.nq, r.nv, r.nu, r.npair) == (7, 7, 7, 0)


def _push_bundle(tmp_path, env, seed=0):
    from simreal_ros.policy.onnx_linear import write_linear_bundle
    from simreal_ros.sim.push_env import PUSH_TERMS

    return write_linear_bundle(tmp_path / f"push{seed}", env.robot, terms=PUSH_TERMS, seed=seed, gain=0.3,
                               action_type="tool_planar_delta", action_scale=env.task.action_scale,
                               control_rate_hz=env.task.control_rate_hz, action_planar=env.action_planar)


def test_executor_runs_a_planar_bundle_exactly_as_the_push_env_does(tmp_path):
    """Same observation and same joint targets in training (the env) and deployment (the
    executor), cycle after cycle, on real ONNX Runtime with the bundle's declared inputs."""
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor

    env = PushEnv(randomization="default")
    bundle = load_bundle(_push_bundle(tmp_path, env), env.robot)
    assert bundle.manifest.action_dim == 2
    ex = PolicyExecutor(bundle, env.robot, ExecutorConfig(compute_deadline=1e9))  # no wall clock: load-proof
    assert ex.inputs == ("joint_state", "goal", "object_pose")
    obs, _ = env.reset(seed=4)
    ex.set_goal(env.goal_point)
    t = env.measurement.stamp
    ex.update_state(env.measurement.position, env.measurement.velocity, t)
    assert ex.step(t).skipped == "no_object"
    moved = 0.0
    for _ in range(30):
        m, tr = env.measurement, env.tracked
        ex.update_state(m.position, m.velocity, m.stamp)
        ex.update_object(tr.position, tr.stamp)
        res = ex.step(m.stamp)
        assert res.skipped is None
        np.testing.assert_allclose(res.observation, obs, rtol=0, atol=1e-6)
        action = np.asarray(bundle.backend(bundle.manifest.normalize(obs)), dtype=float)
        np.testing.assert_allclose(res.action, np.clip(action, -1, 1), atol=1e-6)
        obs, _, term, trunc, info = env.step(res.action)
        np.testing.assert_allclose(info["target"], res.command, atol=1e-9)
        moved = max(moved, float(np.linalg.norm(res.action)))
        if term or trunc:
            break
    assert moved > 0.05  # the policy did act
    # a tracked pose older than max_object_age skips the cycle; nothing is extrapolated
    m = env.measurement
    ex.update_state(m.position, m.velocity, m.stamp)
    ex.update_object(env.tracked.position, m.stamp - 0.5)
    assert ex.step(m.stamp).skipped == "stale_object"


def test_policy_check_bounds_a_planar_bundles_joint_speeds(tmp_path, capsys):
    """The velocity check runs the executor's IK over the workspace (the line is asserted, not the
    exit code: the same command also times the executor on this machine, which load can fail)."""
    from simreal_ros.cli import main

    env = PushEnv()
    path = _push_bundle(tmp_path, env)
    main(["policy", "check", str(path), "--samples", "50"])
    out = capsys.readouterr().out
    assert "ok    velocity limits: tool_planar_delta" in out and "output [batch, 2]" in out, out
    assert "FAIL  outputs" not in out and "FAIL  model" not in out
    d = yaml.safe_load((path / "manifest.yaml").read_text())
    d["action"]["planar"]["max_lead"] = 0.15  # a target up to 15 cm ahead each 0.1 s cycle: beyond the joints' speed
    (path / "manifest.yaml").write_text(yaml.safe_dump(d))
    assert main(["policy", "check", str(path), "--samples", "50"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  velocity limits: tool_planar_delta" in out and "exceeded at panda_joint" in out


@pytest.mark.parametrize("edit, message", [
    ({"planar": None}, "action.planar"),
    ({"planar": {"height": 0.1}}, "missing keys"),
    ({"planar": {"height": 0.1, "tip": [0, 0, 0.1], "workspace": [0.7, 0, 0.3, 0.1], "start": [0.4, 0],
                 "max_lead": 0.03}}, "workspace"),
])
def test_a_planar_bundle_without_a_sound_plane_is_refused(tmp_path, edit, message):
    from simreal_ros.policy.bundle import load_bundle
    from simreal_ros.policy.manifest import BundleError

    env = PushEnv()
    path = _push_bundle(tmp_path, env)
    d = yaml.safe_load((path / "manifest.yaml").read_text())
    d["action"].update(edit)
    if d["action"]["planar"] is None:
        del d["action"]["planar"]
    (path / "manifest.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(BundleError, match=message):
        load_bundle(path, env.robot)


def _colour_pixels(frame: np.ndarray) -> dict[str, int]:
    f = frame.astype(int)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return {"red": int(np.sum((r > 150) & (g < 60) & (b < 60))),  # the puck
            "green": int(np.sum((g > 150) & (g > r + 60) & (g > b + 50))),  # the goal disc
            "dark": int(np.sum((r < 70) & (g < 70) & (b < 80) & (abs(r - b) < 25)))}  # the tool


def test_the_push_render_shows_the_puck_the_goal_and_the_tool():
    env = PushEnv(render_mode="rgb_array")
    env.reset(seed=3)
    frame = env.render()
    assert frame.shape == (360, 480, 3)
    seen = _colour_pixels(frame)
    assert seen["red"] > 400 and seen["green"] > 200 and seen["dark"] > 100, seen
    # the goal disc was discarded with the URDF importer's visual geoms before: it must be a geom
    assert env.arm.model.body_geomnum[mujoco.mj_name2id(env.arm.model, mujoco.mjtObj.mjOBJ_BODY, "goal")] == 1


def test_evaluate_push_compares_policy_and_pusher_and_renders_the_episode(tmp_path):
    """`simreal evaluate` on a push bundle runs the push task (task from the bundle), with the
    scripted pusher as the baseline, through the shield, and renders a push episode."""
    from simreal_ros.cli import main

    env = PushEnv()
    bundle = _push_bundle(tmp_path, env)
    out = tmp_path / "eval"
    assert main(["evaluate", str(bundle), "--episodes", "3", "--workers", "1", "--out", str(out)]) == 0
    import json

    report = json.loads((out / "evaluation.json").read_text())
    assert report["task"] == "push" and report["success_radius_m"] == env.task.success_radius
    for cond in ("nominal", "randomized"):
        assert report["conditions"][cond]["baseline"]["success_rate"] == 1.0
        assert report["conditions"][cond]["policy"]["limit_violations"] == 0
    import imageio.v2 as imageio

    frames = list(imageio.get_reader(out / "episode.gif"))
    seen = _colour_pixels(np.asarray(frames[0])[..., :3])
    assert seen["red"] > 400 and seen["green"] > 200, seen
    assert main(["evaluate", str(bundle), "--task", "reach", "--episodes", "1", "--no-render",
                 "--out", str(tmp_path / "x")]) == 2


def test_a_heavier_puck_drawn_at_reset_stays_stable_and_is_pushed_to_the_goal():
    """Masses changed in place need MuJoCo's derived constants recomputed: with the compiled 0.2 kg
    puck's weights a 0.6 kg puck went unstable (NaN velocities) at the first push and 'fell'."""
    from pathlib import Path

    table = Path(__file__).parent / "data" / "hidden_table_heavy.yaml"
    env = PushEnv(real=table)
    for seed in (20000, 20001, 20002):
        status, worst = _run_pusher(env, seed)
        assert env.contact.puck_mass == pytest.approx(0.6) and env.contact.table_friction == pytest.approx(0.6)
        assert status["is_success"] and not status["fell"], status
        assert not env.arm.has_warnings()
        assert env.arm.model.dof_invweight0[env.sim.puck_dof_adr] == pytest.approx(1 / 0.6)


@pytest.mark.parametrize("text, message", [
    ("table:\n  puck_mass: -1.0\n", "puck_mass"),
    ("table:\n  friction: 0.5\n", "unknown key"),
    ("tabel:\n  puck_mass: 0.5\n", "needs a top-level"),
    ("table: 3\n", "expected a mapping"),
])
def test_bad_hidden_tables_are_refused_naming_the_key(tmp_path, text, message):
    from simreal_ros.sim.real_arm import RealArmError

    path = tmp_path / "table.yaml"
    path.write_text(text)
    with pytest.raises(RealArmError, match=message) as err:
        PushEnv(real=path)
    assert str(path) in str(err.value)


def test_a_hidden_table_is_exact_and_refuses_randomization(tmp_path):
    from pathlib import Path

    table = Path(__file__).parent / "data" / "hidden_table_laggy.yaml"
    env = PushEnv(real=table)
    for seed in (1, 2):
        env.reset(seed=seed)
        assert env.contact.tracker_latency == 0.15 and env.contact.tracker_noise_std == 0.004
        assert env.contact.table_friction == env.task.table_friction  # not in the file: the task's value
    with pytest.raises(ValueError, match="cannot be combined with randomization"):
        PushEnv(real=table, randomization="default")
