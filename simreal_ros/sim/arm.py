"""The simulated arm, driven the way the real one is (ROS-free core of the sim bridge).

* Position mode: joint position targets tracked by a joint impedance controller
  ``tau = K (q_target - q) - D dq`` plus gravity compensation, evaluated by MuJoCo at the
  physics rate (native actuators, so the controller costs almost nothing). K and D are the
  robot description's gains (``RobotModel.gains``, ``config/<robot>_impedance.yaml``).
* Effort mode: joint torques, gravity compensated as the real arm's torque interface is.
* Measurements (position, velocity, measured torque) at ``measurement_period`` with noise,
  bias, latency and drops drawn per episode from the randomization ranges.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import mujoco
import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.robot.mujoco_model import PushScene, SimModel, build_model
from simreal_ros.settings import setting, validate_fields
from simreal_ros.sim.randomize import Draw, RandomizationRanges, randomize
from simreal_ros.sim.real_arm import RealArm

COMMAND_MODES = ("position", "effort")
#: The sim's timing defaults, declared once for :class:`ArmSimConfig`, the sim bridge's
#: :class:`~simreal_ros.sim.driver.DriverConfig` and :class:`~simreal_ros.sim.env.ReachEnv`.
PHYSICS_DT = 0.001  # s
MEASUREMENT_PERIOD = 0.001  # s: the real arm's state comes at 1 kHz


def physics_dt_setting() -> Any:
    """The ``physics_dt`` field of the sim's config classes (one declaration)."""
    return setting(PHYSICS_DT, "MuJoCo time step; the impedance controller runs at this rate", unit="s",
                   low=1e-4, high=0.01)


def measurement_period_setting() -> Any:
    """The ``measurement_period`` field of the sim's config classes (one declaration)."""
    return setting(MEASUREMENT_PERIOD, "sensor sample period (the real arm: 1 kHz), a multiple of physics_dt",
                   unit="s", low=1e-4, high=0.1)


def command_mode_setting() -> Any:
    """The ``command_mode`` field of the sim's config classes (one declaration)."""
    return setting("position", "the active controller: position (impedance targets) or effort (torques)",
                   choices=COMMAND_MODES)


def ticks(period: float, step: float, what: str) -> int:
    """Number of ``step``s in ``period``; raises unless it is a positive integer multiple."""
    if not (math.isfinite(period) and period > 0):
        raise ValueError(f"{what} must be > 0, got {period}")
    n = round(period / step)
    if n < 1 or abs(n * step - period) > 1e-9 * max(1.0, period):
        raise ValueError(f"{what} ({period} s) must be an integer multiple of the step ({step} s)")
    return n


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """A contiguous index array as a slice (copies without fancy-indexing allocations)."""
    if len(idx) and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


@dataclass(frozen=True)
class ArmSimConfig:
    """Settings of :class:`ArmSim`.

    Attributes:
        physics_dt: MuJoCo time step (s); the impedance controller runs at this rate.
        measurement_period: period of joint measurements (s); integer multiple of physics_dt.
        stiffness, damping: impedance gains per joint (N m/rad, N m s/rad). ``None`` (the
            default): the robot description's (``RobotModel.gains``), which is what the safety
            shield assumes; :class:`ArmSim` stores its config with them filled in. A value
            overrides them for gain experiments only (the shield would not know about it).
        command_mode: ``position`` (impedance targets) or ``effort`` (torques).
        ranges: domain randomization ranges, drawn at every :meth:`ArmSim.reset`.
        real_arm: a hidden "real" arm (:mod:`simreal_ros.sim.real_arm`) whose exact values every
            reset applies instead of a draw from ``ranges`` (which must then be nominal).
        push: the push task's scene (tool, puck, goal; :class:`~simreal_ros.robot.mujoco_model.PushScene`),
            or ``None`` for the bare arm.
    """

    physics_dt: float = physics_dt_setting()
    measurement_period: float = measurement_period_setting()
    stiffness: tuple[float, ...] | None = None
    damping: tuple[float, ...] | None = None
    command_mode: str = command_mode_setting()
    ranges: RandomizationRanges = field(default_factory=RandomizationRanges)
    real_arm: RealArm | None = None
    push: PushScene | None = None

    def __post_init__(self) -> None:
        validate_fields(self)
        ticks(self.measurement_period, self.physics_dt, "measurement_period")
        if self.real_arm is not None and self.real_arm.has_arm and self.ranges != RandomizationRanges():
            raise ValueError(f"a hidden real arm ({self.real_arm.source or 'given'}) has exact values: "
                             "it cannot be combined with randomization ranges (use the nominal profile)")
        for name in ("stiffness", "damping"):
            if getattr(self, name) is None:
                continue
            vals = np.asarray(getattr(self, name), dtype=float)
            if vals.ndim != 1 or not np.all(np.isfinite(vals)) or np.any(vals < 0):
                raise ValueError(f"{name} must be one finite value >= 0 per joint, got {vals}")


class Measurement(NamedTuple):
    """One joint measurement as the driver would publish it (robot joint order)."""

    stamp: float  # sim time the sample was taken (s)
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class ArmSim:
    """MuJoCo arm with an impedance controller, randomization, noise, latency and drops.

    Args:
        config: see :class:`ArmSimConfig`.
        robot: robot model (default: the package's Panda).
        seed: seed of the generator used for every random draw.
    """

    def __init__(self, config: ArmSimConfig | None = None, robot: RobotModel | None = None,
                 seed: int | None = None) -> None:
        config = config or ArmSimConfig()
        self.sim: SimModel = build_model(robot, config.physics_dt, config.push)
        self.robot = self.sim.robot
        gains = self.robot.gains
        self.config = replace(config, stiffness=tuple(float(x) for x in (
            gains.stiffness if config.stiffness is None else config.stiffness)), damping=tuple(float(x) for x in (
            gains.damping if config.damping is None else config.damping)))
        if len(self.config.stiffness) != self.robot.n_joints or len(self.config.damping) != self.robot.n_joints:
            raise ValueError(f"stiffness/damping need {self.robot.n_joints} values (one per joint)")
        # a hidden file with only a 'table' section leaves the arm to the randomization ranges
        self._real = config.real_arm if config.real_arm is not None and config.real_arm.has_arm else None
        self.nominal = self.sim.model if self._real is None else self._real.nominal_model(self.sim.model)
        self.model = copy.copy(self.nominal)
        self.data = mujoco.MjData(self.model)
        self.rng = np.random.default_rng(seed)
        self._substeps = ticks(self.config.measurement_period, self.config.physics_dt, "measurement_period")
        self._n = self.robot.n_joints
        self._qa = _as_slice(self.sim.qpos_adr)
        self._da = _as_slice(self.sim.dof_adr)
        self._pending_cmd: deque[tuple[float, np.ndarray, str]] = deque()
        self._pending_meas: deque[tuple[float, Measurement]] = deque()
        self.draw: Draw | None = None
        self.mode = self.config.command_mode
        self.dropped = 0
        self.reset()

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, q0: np.ndarray | None = None) -> Draw:
        """Reset to the ``home`` keyframe (or ``q0``) with a fresh randomization draw."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        real = self._real
        self.draw = (randomize(self.model, self.nominal, self.sim, self.rng, self.config.ranges) if real is None
                     else real.apply(self.model, self.nominal, self.sim))
        mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        if q0 is not None:
            self.data.qpos[self.sim.qpos_adr] = self._checked(q0, "q0")
        self._pending_cmd.clear()
        self._pending_meas.clear()
        self.dropped = 0
        self.set_mode(self.config.command_mode)
        self.data.ctrl[self.sim.actuator_ids] = self.data.qpos[self.sim.qpos_adr] if self.mode == "position" else 0.0
        mujoco.mj_forward(self.model, self.data)
        return self.draw

    def set_mode(self, mode: str) -> None:
        """Switch between impedance (``position``) and torque (``effort``) actuation."""
        if mode not in COMMAND_MODES:
            raise ValueError(f"command mode must be one of {COMMAND_MODES}, got {mode!r}")
        a = self.sim.actuator_ids
        if mode == "position":
            kp = np.asarray(self.config.stiffness) * self.draw.stiffness_scale
            kd = np.asarray(self.config.damping) * self.draw.damping_scale
            self.model.actuator_gainprm[a, 0] = kp
            self.model.actuator_biasprm[a, 0] = 0.0
            self.model.actuator_biasprm[a, 1] = -kp
            self.model.actuator_biasprm[a, 2] = -kd
        else:
            self.model.actuator_gainprm[a, 0] = 1.0
            self.model.actuator_biasprm[a, :3] = 0.0
        if mode != self.mode:
            self.data.ctrl[a] = self.data.qpos[self.sim.qpos_adr] if mode == "position" else 0.0
        self.mode = mode

    # ------------------------------------------------------------------ io
    def _checked(self, values: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        if arr.shape != (self._n,):
            raise ValueError(f"{what} must have {self._n} values, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contains non-finite values: {arr}")
        return arr

    def set_command(self, values: np.ndarray, mode: str | None = None) -> None:
        """Queue a command (targets or torques); it takes effect after the action latency."""
        mode = mode or self.mode
        if mode not in COMMAND_MODES:
            raise ValueError(f"command mode must be one of {COMMAND_MODES}, got {mode!r}")
        self._pending_cmd.append((self.time + self.draw.action_latency, self._checked(values, "command").copy(), mode))

    @property
    def time(self) -> float:
        return float(self.data.time)

    def advance(self, duration: float) -> None:
        """Simulate ``duration`` seconds (an integer multiple of the measurement period)."""
        n = ticks(duration, self.config.measurement_period, "duration")
        m, d, draw, nj = self.model, self.data, self.draw, self._n
        qa, da, aid = self._qa, self._da, self.sim.actuator_ids
        pend = self._pending_cmd
        q, dq, tau, stamp = np.empty((n, nj)), np.empty((n, nj)), np.empty((n, nj)), np.empty(n)
        for k in range(n):  # the hot loop: MuJoCo runs the controller; Python only copies samples
            while pend and pend[0][0] <= d.time + 1e-12:
                _, cmd, mode = pend.popleft()
                if mode != self.mode:
                    self.set_mode(mode)
                d.ctrl[aid] = cmd
            mujoco.mj_step(m, d, self._substeps)
            q[k] = d.qpos[qa]
            dq[k] = d.qvel[da]
            tau[k] = d.qfrc_actuator[da]
            stamp[k] = d.time
        # sensor model, vectorized over the batch: bias, white noise, drops, latency
        q += draw.position_bias
        if draw.position_noise_std > 0 or draw.velocity_noise_std > 0 or draw.effort_noise_std > 0:
            z = self.rng.standard_normal((3, n, nj))
            q += draw.position_noise_std * z[0]
            dq += draw.velocity_noise_std * z[1]
            tau += draw.effort_noise_std * z[2]
        keep = range(n)
        if draw.drop_probability > 0:
            kept = self.rng.random(n) >= draw.drop_probability
            self.dropped += int(n - kept.sum())
            keep = np.flatnonzero(kept).tolist()
        lat = draw.observation_latency
        self._pending_meas.extend((stamp[k] + lat, Measurement(float(stamp[k]), q[k], dq[k], tau[k])) for k in keep)

    def pop_measurements(self) -> list[Measurement]:
        """Measurements whose observation latency has elapsed, oldest first.

        Each is stamped with the sim time it was *taken*, as a driver stamps at acquisition,
        so a consumer sees the latency as ``now - stamp``.
        """
        out = []
        t = self.time + 1e-12
        while self._pending_meas and self._pending_meas[0][0] <= t:
            out.append(self._pending_meas.popleft()[1])
        return out

    def true_state(self) -> Measurement:
        """Noise-free state now (ground truth; for evaluation only)."""
        d, sim = self.data, self.sim
        return Measurement(self.time, d.qpos[sim.qpos_adr].copy(), d.qvel[sim.dof_adr].copy(),
                           d.qfrc_actuator[sim.dof_adr].copy())

    def flange_position(self) -> np.ndarray:
        return self.data.site_xpos[self.sim.flange_site].copy()

    def flange_velocity(self) -> np.ndarray:
        """Linear velocity of the flange in the world frame."""
        res = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self.sim.flange_site, res, 0)
        return res[3:]

    def set_target(self, position: np.ndarray) -> None:
        """Move the target marker (visual only)."""
        self.data.mocap_pos[self.sim.target_mocap] = np.asarray(position, dtype=float)

    def has_warnings(self) -> bool:
        return any(w.number > 0 for w in self.data.warning)


class SceneCamera:
    """Offscreen frames of an arm's scene from a fixed free camera (the envs' ``rgb_array`` render).

    Args:
        model: the MuJoCo model. lookat (m), distance (m), azimuth and elevation (deg): the view.
        height, width: frame size in pixels.
    """

    def __init__(self, model: mujoco.MjModel, lookat, distance: float, azimuth: float, elevation: float,
                 height: int = 360, width: int = 480) -> None:
        self.renderer = mujoco.Renderer(model, height, width)
        self.camera = mujoco.MjvCamera()
        self.camera.lookat[:] = lookat
        self.camera.distance, self.camera.azimuth, self.camera.elevation = distance, azimuth, elevation

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self.renderer.update_scene(data, camera=self.camera)
        return self.renderer.render()

    def close(self) -> None:
        self.renderer.close()
