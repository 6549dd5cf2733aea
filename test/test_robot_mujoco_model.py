"""The MuJoCo model of the arm is built beside the robot description: the estimator (and, once
switched, the shield) use the arm's dynamics without importing the simulator."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import numpy as np

import simreal_ros.estimator

#: estimator modules that drive the simulated arm on purpose: the scoring tool (``simreal
#: estimate``) and its harness. Everything else is what the estimator node runs.
SIM_HARNESS = {"simreal_ros.estimator.cli", "simreal_ros.estimator.simrun"}


def _sim_modules_after(code: str) -> list[str]:
    script = code + "\nimport sys\nprint('SIM', sorted(m for m in sys.modules if m == 'simreal_ros.sim' " \
                    "or m.startswith('simreal_ros.sim.')))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("SIM "))
    return eval(line[4:])  # a printed list of module names


def test_estimator_uses_the_arm_dynamics_without_importing_the_simulator():
    mods = [m.name for m in pkgutil.walk_packages(simreal_ros.estimator.__path__, "simreal_ros.estimator.")
            if m.name not in SIM_HARNESS]
    assert "simreal_ros.estimator.dynamics" in mods
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods) + (
        "from simreal_ros.estimator.dynamics import InverseDynamics\n"
        "from simreal_ros.robot import load_robot\n"
        "robot = load_robot()\n"
        "tau, Y = InverseDynamics(robot)(robot.ready_pose, robot.ready_pose * 0, robot.ready_pose * 0)\n"
        "assert tau.shape == (7,) and abs(Y).max() > 0\n")
    assert _sim_modules_after(code) == []


def test_shield_does_not_import_the_simulator():
    code = ("import simreal_ros.shield as s\n"
            "from simreal_ros.robot import load_robot\n"
            "s.Shield(load_robot(), s.ShieldConfig())\n")
    assert _sim_modules_after(code) == []


def test_builder_is_the_one_the_sim_runs():
    from simreal_ros.robot.mujoco_model import build_model
    from simreal_ros.sim.arm import ArmSim

    built = build_model()
    arm = ArmSim(seed=0)
    assert (built.model.nq, built.model.nu) == (arm.model.nq, arm.model.nu)
    np.testing.assert_array_equal(built.model.body_mass, arm.nominal.body_mass)
    np.testing.assert_array_equal(built.qpos_adr, arm.sim.qpos_adr)
