"""Contact calibration of the push task, end to end: ``simreal sim --task push --real-arm FILE``
records a push session through the real graph (every node its own process, over DDS on
loopback; the scripted pusher drives, the shield in shadow mode) on a hidden table the fitter
never reads (test/data/hidden_table_slippery_heavy.yaml: puck-table friction 0.03, an eighth of
the task's, and a 0.5 kg puck, 2.5 times the task's); ``simreal calibrate fit --contact only``
reads the bag back with rosbags, replays the measured tool path against a MuJoCo puck
(mujoco.sysid for the friction) and the arm's torques for the mass, and writes the estimates
into calibration.yaml and its randomization profile (``-m slow``). Measured 2026-12-02 at load
~20 (unpaced, 3 goals): friction 0.0337 (+12 %), mass 0.483 kg (-3 %); on the 0.2 kg slippery
table (no test) friction 0.0326 (+9 %). The recording is paced, as the loop's sessions are:
there the replayed contact force is noisier, and the mass by least squares of the measured force
on the replayed one came out 0.414 kg (-17 %; idle, 12 goals), by their reduced major axis (the
fit now) 0.474 (-5 %). This test's own 8-goal recording (2026-12-02, idle) gave 0.515 kg (+3 %),
and least squares 0.474 (-5 %): a session does not always show the tilt, so
:func:`test_the_mass_slope_is_not_tilted_by_noise_in_the_replayed_force` checks the statistics.

The replay is biased high in friction by about 10 % on these MuJoCo tables, consistently over
pushes (a scatter between pushes of a few %); the cause is not found (same timestep, contact
pair, puck geometry and friction coefficients as the scene's). ``model_error`` (5 %) widens
every std by that much at least."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap_ros2._dynamic import serialize_dynamic

from simreal_ros.bag import BagWriter
from simreal_ros.bag.types import message_definition
from simreal_ros.calibrate.contact import fit_contact
from simreal_ros.calibrate.contact_log import ContactInputError, PushLog, read_push_bag
from simreal_ros.robot import load_robot
from simreal_ros.robot.mujoco_model import PushScene
from simreal_ros.robot.tool import load_tool
from simreal_ros.sim.arm import ArmSim, ArmSimConfig
from simreal_ros.sim.push_task import load_push_task
from simreal_ros.sim.push_world import PushWorld
from simreal_ros.sim.randomize import ContactRanges, load_ranges

pytestmark = [pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parent.parent
HIDDEN = REPO / "test" / "data" / "hidden_table_slippery_heavy.yaml"
TRUE_FRICTION, TRUE_MASS = 0.03, 0.5


def _cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simreal_ros.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy(), cwd=REPO)


def _record(out: Path) -> Path:
    proc = _cli("sim", "--task", "push", "--shield-mode", "shadow", "--real-arm", str(HIDDEN), "--record", "true",
                "--output-dir", str(out), "--goals", "8", "--no-progress", "--json", timeout=900)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary.get("bag") and summary["limit_violations"] == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return Path(summary["bag"])


@pytest.fixture(scope="module")
def push_bag(tmp_path_factory) -> Path:
    """One recorded push session. Known (2026-12-02, load ~20 on 2 cores): now and then the shield
    faults at start-up on a joint state older than its 0.5 s watchdog and holds the arm for the
    whole run (the bag then has no push); that recording is repeated once, and said so."""
    bag = _record(tmp_path_factory.mktemp("push"))
    log = read_push_bag(bag)
    if np.ptp(log.obj_p[:, 0]) < 0.01 and np.ptp(log.obj_p[:, 1]) < 0.01:
        print(f"the puck never moved in {bag} (the shield held the arm): recording again")
        bag = _record(tmp_path_factory.mktemp("push_again"))
    return bag


@pytest.mark.ros
@pytest.mark.slow  # ~14 min at load 20 on 2 cores: 2-5 min recording, 7-10 min fitting
def test_the_fit_recovers_the_hidden_friction_and_mass(push_bag, tmp_path):
    out = tmp_path / "cal"
    proc = _cli("calibrate", "fit", str(push_bag), "--contact", "only", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = yaml.safe_load((out / "calibration.yaml").read_text())
    contact = doc["calibration"]["contact"]
    mu, m = contact["parameters"]["table_friction"], contact["parameters"]["puck_mass"]
    print(f"pushes {contact['pushes']}, contact {contact['contact_s']} s, free sliding {contact['free_slide_s']} s; "
          f"friction {mu['value']:.4f} +- {mu['std']:.2g} (hidden {TRUE_FRICTION}), mass {m['value']:.3f} +- "
          f"{m['std']:.2g} kg (hidden {TRUE_MASS}); puck path RMSE {contact['replay']['puck_path_rmse_m']}")
    assert mu["identified"] and m["identified"], contact["warnings"]
    assert mu["value"] == pytest.approx(TRUE_FRICTION, rel=0.15)
    assert m["value"] == pytest.approx(TRUE_MASS, rel=0.10)
    assert mu["std"] > 0 and m["std"] > 0 and m["unit"] == "kg"
    assert mu["provenance"] == [push_bag.name] and "mujoco.sysid" in mu["method"]
    # the calibrated replay follows the tracked puck better than the task's friction
    rmse = contact["replay"]["puck_path_rmse_m"]
    assert rmse["after"] < 0.5 * rmse["before"]
    # the profile's contact section is centred on the estimates (what simreal evaluate --randomization reads)
    task = load_push_task()
    ranges = load_ranges(profile=str(out / "calibration.yaml")).contact
    assert np.mean(ranges.table_friction_scale) * task.table_friction == pytest.approx(mu["value"], rel=0.01)
    assert np.mean(ranges.puck_mass_scale) * task.puck_mass == pytest.approx(m["value"], rel=0.01)
    assert ranges.table_friction_scale[0] < mu["value"] / task.table_friction < ranges.table_friction_scale[1]
    assert (out / "report_contact.png").stat().st_size > 10_000


def test_the_mass_slope_is_not_tilted_by_noise_in_the_replayed_force():
    """The mass is the slope of the measured contact force on the replayed one (at the prior
    mass). Both carry noise; with noise in the replayed force as large as in the paced sessions'
    (about half its spread), least squares comes out about 20 % low, the reduced major axis
    (contact.origin_slope) within a few % (exact for noise in proportion to each side's scale, as
    it assumes; otherwise it lies between the two least-squares slopes)."""
    from simreal_ros.calibrate.contact import origin_slope

    rng = np.random.default_rng(3)
    force = np.abs(rng.normal(0.0, 1.0, 4000))  # the true push force at the prior mass, N
    k = 2.0  # the puck twice the prior mass
    replayed = force + rng.normal(0.0, 0.5, force.size)
    measured = k * force + rng.normal(0.0, 1.0, force.size)
    least_squares = float(replayed @ measured) / float(replayed @ replayed)
    assert least_squares < 0.85 * k  # the tilt the fit used to have
    assert origin_slope(replayed, measured) == pytest.approx(k, rel=0.05)
    assert origin_slope(force, k * force) == pytest.approx(k, rel=1e-12)  # exact without noise


def _idle_log(seconds: float = 2.0, ranges: ContactRanges | None = None) -> PushLog:
    """What a bag of a session in which the tool never reaches the puck holds: the MuJoCo arm with
    the push scene holding its start pose, its measurements and the tracker's samples."""
    robot = load_robot()
    task, tool = load_push_task(), load_tool()
    arm = ArmSim(ArmSimConfig(push=PushScene(tool, task)), robot=robot, seed=0)
    world = PushWorld(arm, task, tool, ranges or ContactRanges())
    arm.reset(q0=world.frame.rest)
    world.reset(np.random.default_rng(0), 1)
    arm.set_command(world.frame.rest)
    st, q, dq, tau, ot, op, oq = [], [], [], [], [], [], []
    for _ in range(int(seconds / arm.config.measurement_period)):
        arm.advance(arm.config.measurement_period)
        for m in arm.pop_measurements():
            st.append(m.stamp), q.append(m.position), dq.append(m.velocity), tau.append(m.effort)
        for o in world.track():
            ot.append(o.stamp), op.append(o.position), oq.append(o.orientation)
    return PushLog("idle", "", np.array(st), np.array(q), np.array(dq), np.array(tau), np.array(ot), np.array(op),
                   np.array(oq))


def test_without_a_push_nothing_is_identified_and_the_reason_is_given():
    log = _idle_log()
    assert len(log.obj_t) >= 50 and len(log.state_t) >= 1000
    got = fit_contact([log])
    assert not got.segments
    for name in ("table_friction", "puck_mass"):
        e = got.estimates[name]
        assert not e.identified and e.value is None and "never moved the puck" in e.reason, e
    # the tracker needs no push; this log has no arrival times (no bag), so no latency
    assert not got.estimates["tracker_latency"].identified and "arrival times" in got.estimates[
        "tracker_latency"].reason
    assert len(got.warnings) == 3


def test_the_tracker_latency_and_noise_come_from_the_stamps_and_the_tracked_positions():
    """A still puck tracked with 3 mm noise, its poses arriving 150 ms after their stamps (the
    joint states 1 ms after theirs): both are identified, and the profile is centred on them."""
    from simreal_ros.calibrate.contact import ContactConfig
    from simreal_ros.calibrate.outputs import contact_profile
    from simreal_ros.calibrate.tracker import fit_tracker

    log = _idle_log(4.0, ContactRanges(tracker_noise_std=(0.003, 0.003), tracker_latency=(0.15, 0.15)))
    rng = np.random.default_rng(1)
    log.obj_delay = 0.151 + rng.uniform(0.0, 0.002, len(log.obj_t))  # the bridge's cycle as jitter
    log.state_delay = 0.001 + rng.uniform(0.0, 0.0005, len(log.state_t))
    cfg = ContactConfig()
    est = fit_tracker([log], cfg, load_push_task().tracker_rate_hz)
    lat, noise = est["tracker_latency"], est["tracker_noise_std"]
    assert lat.identified and lat.value == pytest.approx(0.15, abs=0.002) and lat.std == cfg.latency_floor
    assert noise.identified and noise.value == pytest.approx(0.003, rel=0.15), noise
    got = fit_contact([log])
    prof = contact_profile(got)
    assert prof["tracker_latency"][0] < 0.15 < prof["tracker_latency"][1] < 0.2
    assert prof["tracker_noise_std"][0] < 0.003 < prof["tracker_noise_std"][1]
    assert prof["table_friction_scale"] == [0.7, 1.3]  # not identified without a push: the default profile's
    # too few poses: not identified, with the reason
    short = dataclasses.replace(log, obj_t=log.obj_t[:10], obj_p=log.obj_p[:10], obj_quat=log.obj_quat[:10],
                                obj_delay=log.obj_delay[:10])
    few = fit_tracker([short], cfg, 50.0)
    assert not few["tracker_latency"].identified and "only 10 tracked poses" in few["tracker_latency"].reason


def _joint_state_bag(path: Path) -> Path:
    robot = load_robot()
    kind = "sensor_msgs/msg/JointState"
    enc = serialize_dynamic(kind, message_definition(kind)[0])[kind]
    with BagWriter(path, status_interval_s=0) as w:
        w.add_topic("/joint_states", kind)
        for k in range(50):
            ns = 1_796_000_000 * 10**9 + k * 4_000_000
            w.write("/joint_states", enc({"header": {"stamp": {"sec": ns // 10**9, "nanosec": ns % 10**9},
                                                     "frame_id": ""}, "name": list(robot.joint_names),
                                          "position": list(robot.ready_pose), "velocity": [0.0] * 7,
                                          "effort": [0.0] * 7}), ns)
    return path


def test_a_bag_without_object_poses_is_refused_naming_it(tmp_path):
    bag = _joint_state_bag(tmp_path / "arm_only")
    with pytest.raises(ContactInputError, match=f"{bag}: no tracked object poses on /simreal/object_pose"):
        read_push_bag(bag)
    for mode in ("only", "on"):
        proc = _cli("calibrate", "fit", str(bag), "--contact", mode, "--out", str(tmp_path / "out"), timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and str(bag) in line and "/simreal/object_pose" in line, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "calibration.yaml").exists()
