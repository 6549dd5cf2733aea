"""`simreal explore` (issue 14): an exploration family runs through the whole graph, every node its
own process, the shield active, against a hidden table; the latent code is cycled per episode over
DDS and the recorded session becomes a dataset whose observations carry each episode's code. The
policy node refuses a family whose latent it is not given, naming it.

The family here is a linear ONNX model over the push terms + a 2-code latent (no torch needed):
what is tested is the graph's handling of the latent input, not a trained policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
N = 2


def _family(tmp_path):
    from simreal_ros.policy.onnx_linear import write_linear_bundle
    from simreal_ros.sim.push_env import PUSH_TERMS, PushEnv

    env = PushEnv()
    return write_linear_bundle(tmp_path / "family", env.robot, terms=(*PUSH_TERMS, ("latent", N)), gain=0.5,
                               action_type="tool_planar_delta", action_scale=env.task.action_scale,
                               control_rate_hz=env.task.control_rate_hz, action_planar=env.action_planar,
                               action_max_change=env.task.action_max_change, name="linear_family",
                               provenance={"tool": "test", "training": {"env": {"id": "SimReal/Push-v0"}}})


def test_the_policy_node_refuses_a_family_without_its_latent_naming_it(tmp_path, processes):
    bundle = _family(tmp_path)
    proc = processes.start("-m", "simreal_ros.nodes.policy_node", "--ros-args", "--params-file",
                           "config/policy.yaml", "-p", f"bundle:={bundle}", name="policy")
    assert proc.wait(timeout=60) != 0
    out = processes.output(proc)
    assert "observes latent, which this node cannot provide: parameter 'latent' is not set (-1)" in out, out
    proc = processes.start("-m", "simreal_ros.nodes.policy_node", "--ros-args", "--params-file",
                           "config/policy.yaml", "-p", f"bundle:={bundle}", "-p", "latent:=2", name="policy_bad")
    assert proc.wait(timeout=60) != 0
    out = processes.output(proc)
    assert "parameter 'latent' = 2: latent code 2 is not an integer in [0, 1]" in out, out


def test_explore_cycles_the_latent_per_episode_through_the_graph_and_records_it(tmp_path, capsys):
    from simreal_ros.cli import main
    from simreal_ros.dataset import load
    from simreal_ros.dataset.build import build

    bundle = _family(tmp_path)
    real = str(Path(__file__).parent / "data" / "hidden_table_slippery.yaml")  # puck-table friction 0.03
    rc = main(["explore", str(bundle), "--episodes", "3", "--goal-timeout", "4", "--real", real,
               "--output-dir", str(tmp_path / "runs"), "--no-progress", "--json"])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0, s
    assert s["error"] is None and s["goals_attempted"] == 3, s
    assert s["shield_mode"] == "active" and s["limit_violations"] == 0
    assert s["exploration"]["episode_latents"] == [0, 1, 0] and s["exploration"]["latent_size"] == N
    assert [g["latent"] for g in s["goals"]] == [0, 1, 0]
    assert s["policy_commands"] > 20
    t = build([s["bag"]])  # `simreal dataset`'s reader: one episode per goal
    assert list(t.meta.obs_terms)[-1] == "latent" and t.meta.obs_sizes[-1] == N
    codes = t.observations[:, -N:]
    assert np.all((codes == 0) | (codes == 1)) and np.all(codes.sum(axis=1) == 1)
    goal_xy = t.observations[:, 18:20]  # PUSH_TERMS: joint_pos 7, joint_vel 7, tool_xy, object_xy, goal_xy
    for g in s["goals"]:  # the rows acting on each episode's goal carry that episode's code
        rows = np.linalg.norm(goal_xy - np.asarray(g["goal"])[:2], axis=1) < 1e-6
        assert rows.sum() > 5, g
        z = np.argmax(codes[rows], axis=1)
        assert np.mean(z == g["latent"]) > 0.9 and z[-1] == g["latent"], (g, z)
    ds = tmp_path / "ds"
    from simreal_ros.dataset import write

    write(t, ds)
    assert len(load(ds, task="push")) == len(t)
