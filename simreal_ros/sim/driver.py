"""ROS-free core of the sim bridge: the simulated arm behind a driver-like interface.

:class:`SimDriver` owns an :class:`~simreal_ros.sim.arm.ArmSim` and does everything the
bridge node does except talking ROS: command validation, timing (paced or unpaced with an
optional command lockstep), goal sampling, episode resets, stamps and counters.

Timing
------
``paced``
    :meth:`SimDriver.due_steps` returns how many publish periods are due on the wall clock
    (real-time factor about 1). When more than ``max_catchup`` periods are due (the process
    stalled) the backlog is skipped and counted in ``overruns``: the sim never runs a burst
    of catch-up steps that would make it faster than real time afterwards.
``unpaced``
    One publish period per call to :meth:`SimDriver.due_steps` (the node's timer fires as
    fast as the executor allows), with ``/clock`` published each tick. With
    ``sync_period > 0`` the sim also runs in *lockstep* with its consumer: at every multiple
    of ``sync_period`` (sim time) it waits for the next command in a FIFO and applies exactly
    that one, so the joint-state sequence is a pure function of (seed, command sequence),
    whatever the wall-clock timing. If no command arrives within ``sync_timeout`` wall
    seconds the sim goes on with the last target and counts a ``sync_timeouts``. With
    ``sync_period = 0`` it free-runs and applies commands when they arrive (fastest, not
    reproducible against a closed loop).

Time never goes backwards: an episode reset keeps counting from the previous sim time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from simreal_ros.robot import RobotModel
from simreal_ros.settings import setting, settings_of, validate_fields
from simreal_ros.sim.arm import (
    ArmSim,
    ArmSimConfig,
    Measurement,
    command_mode_setting,
    measurement_period_setting,
    physics_dt_setting,
    ticks,
)
from simreal_ros.sim.env import sample_goal
from simreal_ros.sim.randomize import RandomizationRanges, load_ranges
from simreal_ros.sim.real_arm import load_real_arm

TIMING_MODES = ("paced", "unpaced")
TASKS = ("reach", "push")

#: per-knob override name -> (section, field) of :class:`RandomizationRanges`. A value fixes
#: the knob (``[v, v]``) instead of the profile's range.
KNOBS: dict[str, tuple[str, str]] = {
    "noise.position_std": ("sensor", "position_noise_std"),
    "noise.velocity_std": ("sensor", "velocity_noise_std"),
    "noise.effort_std": ("sensor", "effort_noise_std"),
    "bias.position": ("sensor", "position_bias"),
    "latency.observation_s": ("sensor", "observation_latency"),
    "latency.action_s": ("sensor", "action_latency"),
    "drop_probability": ("sensor", "drop_probability"),
    "friction": ("dynamics", "joint_friction"),
    "damping": ("dynamics", "joint_damping"),
    "armature": ("dynamics", "joint_armature"),
    "payload_mass": ("dynamics", "payload_mass"),
}


def ranges_with_overrides(profile: str | RandomizationRanges, overrides: Mapping[str, float | None]) -> \
        RandomizationRanges:
    """The profile's ranges with some knobs fixed to one value (``None`` keeps the profile)."""
    ranges = load_ranges(profile=profile) if isinstance(profile, str) else profile
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in KNOBS:
            raise ValueError(f"unknown randomization knob {key!r} (allowed: {sorted(KNOBS)})")
        v = float(value)
        if not (math.isfinite(v) and v >= 0) or (key == "drop_probability" and v > 1):
            raise ValueError(f"randomization knob {key!r} = {value!r}: must be finite and >= 0"
                             + (" and <= 1" if key == "drop_probability" else ""))
        section, name = KNOBS[key]
        part = replace(getattr(ranges, section), **{name: (v, v)})
        ranges = replace(ranges, **{section: part})
    return ranges


#: a knob parameter of the bridge node at this value keeps the profile's range
UNSET_KNOB = -1.0


def profile_error(name: str) -> str | None:
    """Why ``name`` is not a randomization profile (None: it is one)."""
    try:
        load_ranges(profile=name)
    except ValueError as exc:
        return str(exc)
    return None


def knob_error(v: float) -> str | None:
    """Why ``v`` is not a knob parameter's value (None: it is one)."""
    return None if v == UNSET_KNOB or v >= 0 else "must be -1 (use the profile) or >= 0"


@dataclass(frozen=True)
class DriverConfig:
    """Settings of :class:`SimDriver`, declared once: the bridge node's parameters derive from
    the :func:`~simreal_ros.settings.setting` fields (``config/sim_bridge.yaml`` shows their
    defaults); ``ranges`` and ``goal`` are built by the node from its profile/knob/goal parameters.

    Attributes:
        publish_rate_hz: joint-state rate; its period is a multiple of ``measurement_period``.
        physics_dt, measurement_period, command_mode: as :class:`~simreal_ros.sim.arm.ArmSimConfig`
            (same declaration, same defaults).
        timing: ``paced`` or ``unpaced`` (see module docstring).
        sync_period: unpaced lockstep period (s, multiple of the publish period); 0 = free-run.
        sync_timeout: wall seconds to wait for a lockstep command before going on.
        max_catchup: paced: most periods run in one go before the backlog is skipped.
        ranges: randomization ranges (profile plus overrides, see :func:`ranges_with_overrides`).
        seed: seed of the arm's randomization and noise. goals_seed: seed of goal sampling.
        goal: initial goal (x, y, z) in m, or ``None`` to sample one.
    """

    publish_rate_hz: float = setting(250.0, "joint-state rate; the period is a multiple of measurement_period (a "
                                     "real FCI driver streams 1 kHz; 250 Hz keeps a laptop sim light)", unit="Hz",
                                     low=1.0, high=2000.0)
    physics_dt: float = physics_dt_setting()
    measurement_period: float = measurement_period_setting()
    command_mode: str = command_mode_setting()
    timing: str = setting("paced", "paced: wall clock; unpaced: as fast as possible with /clock",
                          choices=TIMING_MODES)
    sync_period: float = setting(0.0, "unpaced lockstep: wait for one command every this many sim seconds "
                                 "(0: free-run)", unit="s", low=0.0, high=10.0)
    sync_timeout: float = setting(1.0, "unpaced lockstep: wall seconds to wait for a command before going on",
                                  unit="s", low=0.001, high=3600.0)
    max_catchup: int = setting(20, "paced: most publish periods run at once after a stall before the backlog is "
                               "skipped (counted as overruns)", low=1, high=100000)
    ranges: RandomizationRanges = field(default_factory=RandomizationRanges)
    real_arm: str = setting("", "YAML file of a hidden 'real' arm with exact values applied at every reset instead "
                            "of a randomization draw (simreal_ros/sim/real_arm.py; '' = none; the randomization "
                            "must then be nominal)")
    seed: int = setting(0, "seed of randomization draws, noise and drops", low=0, high=2**31 - 1)
    goals_seed: int = setting(0, "seed of goal sampling", low=0, high=2**31 - 1)
    goal: tuple[float, float, float] | None = None
    task: str = setting("reach", "reach: the bare arm; push: the puck, the pusher tool and the goal on the table, "
                        "with the object tracker's poses", choices=TASKS)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.sync_period > 0:
            ticks(self.sync_period, self.period, "sync_period")

    @property
    def period(self) -> float:
        return 1.0 / self.publish_rate_hz

    @classmethod
    def from_parameters(cls, p: Mapping[str, Any]) -> DriverConfig:
        """The config of the bridge node's flat parameters: the settings, ``randomization_profile``,
        one parameter per :data:`KNOBS` key (:data:`UNSET_KNOB`: the profile's range) and ``goal``
        (``[0, 0, 0]``: sample one). Raises ValueError naming a bad value."""
        knobs = {k: (None if p[k] == UNSET_KNOB else p[k]) for k in KNOBS}
        goal = None if not any(p["goal"]) else tuple(p["goal"])
        return cls(**{st.name: p[st.name] for st in settings_of(cls)},
                   ranges=ranges_with_overrides(p["randomization_profile"], knobs), goal=goal)


@dataclass(frozen=True)
class Tick:
    """What one publish period produced (times are driver times, see :attr:`SimDriver.time`)."""

    time: float
    measurement: Measurement | None  # newest measurement that became available, None if none
    truth: Measurement
    objects: tuple = ()  # push: tracked puck poses that arrived this period (TrackedPose, driver-time stamps)


class SimDriver:
    """The simulated arm as a driver: validated commands in, measurements out, timing.

    Args:
        config: see :class:`DriverConfig`.
        robot: robot model (default: the package's Panda).
    """

    def __init__(self, config: DriverConfig | None = None, robot: RobotModel | None = None) -> None:
        self.config = cfg = config or DriverConfig()
        real_arm = None
        if cfg.real_arm:
            from simreal_ros.robot import load_robot

            robot = robot or load_robot()
            real_arm = load_real_arm(cfg.real_arm, robot)  # RealArmError (a ValueError) names file and key
        push = None
        if cfg.task == "push":
            from simreal_ros.robot.mujoco_model import PushScene
            from simreal_ros.robot.tool import load_tool
            from simreal_ros.sim.push_task import load_push_task

            push = PushScene(load_tool(), load_push_task())
        self.arm = ArmSim(ArmSimConfig(physics_dt=cfg.physics_dt, measurement_period=cfg.measurement_period,
                                       command_mode=cfg.command_mode, ranges=cfg.ranges, real_arm=real_arm,
                                       push=push), robot=robot, seed=cfg.seed)
        self.robot = self.arm.robot
        self.world = None
        if push is not None:  # the push task's puck, goal and tracker on the same arm (as the Gymnasium env)
            from simreal_ros.sim.push_world import PushWorld

            self.world = PushWorld(self.arm, push.task, push.tool, cfg.ranges.contact,
                                   real_arm.table if real_arm is not None else None)
            self._world_rng = np.random.default_rng(cfg.seed + 1)
            self._reset_push()
        self.period = cfg.period
        ticks(self.period, cfg.measurement_period, "publish period (1/publish_rate_hz)")
        self._sync_every = ticks(cfg.sync_period, self.period, "sync_period") if cfg.sync_period > 0 else 0
        self.goal_rng = np.random.default_rng(cfg.goals_seed)
        if self.world is not None:
            self.goal = self.world.goal_point if cfg.goal is None else self.set_goal(cfg.goal)
        else:
            self.goal = self._checked_goal(cfg.goal) if cfg.goal is not None else sample_goal(self.robot,
                                                                                            self.goal_rng)
            self.arm.set_target(self.goal)
        self._offset = 0.0  # sim time of earlier episodes
        self._fifo: deque[np.ndarray] = deque()
        self._steps = 0
        self._wall0: float | None = None  # pacing anchor (moves forward when a backlog is skipped)
        self._wall_start: float | None = None
        self._t_start = 0.0
        self._wait_since: float | None = None
        self.episode = 0
        self._dropped_before = 0
        self.counters = {"published": 0, "no_measurement": 0, "rejected_commands": 0, "accepted_commands": 0,
                         "overruns": 0, "sync_timeouts": 0}
        self.last_rejection = ""
        self.target = self.arm.true_state().position.copy() if cfg.command_mode == "position" else np.zeros(
            self.robot.n_joints)

    # ------------------------------------------------------------------ time
    @property
    def time(self) -> float:
        """Sim time since the driver started (s), continuing across resets."""
        return self._offset + self.arm.time

    def real_time_factor(self, wall_now: float) -> float:
        """Sim seconds per wall second since :meth:`start` (NaN before)."""
        if self._wall_start is None or wall_now <= self._wall_start:
            return float("nan")
        return self._steps * self.period / (wall_now - self._wall_start)

    def start(self, wall_now: float) -> None:
        """Anchor the wall clock (pacing and real-time factor) at ``wall_now``."""
        self._wall0 = self._wall_start = wall_now
        self._t_start = self.time
        self._steps = 0

    @property
    def started(self) -> bool:
        return self._wall0 is not None

    def wall_time_of(self, t: float) -> float:
        """Paced: the wall-clock time at which driver time ``t`` is scheduled (smooth, stall-adjusted)."""
        if self._wall0 is None:
            raise RuntimeError("wall_time_of() before start()")
        return self._wall0 + (t - self._t_start)

    def due_steps(self, wall_now: float) -> int:
        """How many publish periods to run now (see the module docstring)."""
        if self._wall0 is None:
            self.start(wall_now)
        if self.config.timing == "paced":
            due = int(math.floor((wall_now - self._wall0) / self.period + 1e-9)) - self._steps
            if due > self.config.max_catchup:
                skipped = due - 1
                self.counters["overruns"] += skipped
                self._wall0 += skipped * self.period
                due = 1
            return max(due, 0)
        if not self._sync_every or self._steps == 0 or self._steps % self._sync_every:
            return 1  # the first sync period runs on the initial target, so a consumer sees states first
        if self._fifo:
            self._apply(self._fifo.popleft())
            self._wait_since = None
            return 1
        if self._wait_since is None:
            self._wait_since = wall_now
        if wall_now - self._wait_since >= self.config.sync_timeout:
            self.counters["sync_timeouts"] += 1
            self._wait_since = None
            return 1
        return 0

    @property
    def waiting_for_command(self) -> bool:
        """True while the unpaced lockstep waits for its next command."""
        return self._wait_since is not None

    # ------------------------------------------------------------------ io
    def command(self, values: Sequence[float], mode: str) -> bool:
        """Accept a command for controller ``mode``; a bad one is counted and ignored.

        Rejected (the arm keeps its last target): wrong length, non-finite values, or a
        command for the controller that is not active. :attr:`last_rejection` says why.
        """
        arr = np.asarray(values, dtype=float).ravel()
        why = ""
        if mode != self.config.command_mode:
            why = f"{mode} command while the active controller is {self.config.command_mode}"
        elif arr.shape != (self.robot.n_joints,):
            why = f"expected {self.robot.n_joints} values, got {arr.size}"
        elif not np.all(np.isfinite(arr)):
            why = f"non-finite values {arr.tolist()}"
        if why:
            self.counters["rejected_commands"] += 1
            self.last_rejection = why
            return False
        self.counters["accepted_commands"] += 1
        if self._sync_every and self.config.timing == "unpaced":
            self._fifo.append(arr.copy())
        else:
            self._apply(arr)
        return True

    def _apply(self, arr: np.ndarray) -> None:
        self.target = arr.copy()
        self.arm.set_command(arr, self.config.command_mode)

    def step(self) -> Tick:
        """Advance one publish period; return the newest available measurement, the truth and
        (push) the tracked puck poses that arrived."""
        self.arm.advance(self.period)
        self._steps += 1
        meas = self.arm.pop_measurements()
        latest = self._shift(meas[-1]) if meas else None
        if latest is None:
            self.counters["no_measurement"] += 1
        else:
            self.counters["published"] += 1
        objects = ()
        if self.world is not None:
            objects = tuple(o._replace(stamp=o.stamp + self._offset) for o in self.world.track())
        return Tick(self.time, latest, self._shift(self.arm.true_state()), objects)

    def _reset_push(self) -> None:
        """Push: the tool's start pose, then the table, puck, goal and tracker (PushWorld.reset)."""
        self.arm.reset(q0=self.world.frame.rest)
        self.world.reset(self._world_rng, int(self._world_rng.integers(2**62)))

    def _shift(self, m: Measurement) -> Measurement:
        return m._replace(stamp=m.stamp + self._offset)

    # ------------------------------------------------------------------ episodes and goals
    def reset(self) -> np.ndarray:
        """New episode: home pose, fresh randomization draw, new sampled goal. Returns the goal."""
        self._offset += self.arm.time
        self._dropped_before += self.arm.dropped
        if self.world is not None:
            self._reset_push()
            self._fifo.clear()
            self.episode += 1
            self.target = self.arm.true_state().position.copy()
            self.goal = self.world.goal_point
            return self.goal.copy()
        self.arm.reset()
        self._fifo.clear()
        self.episode += 1
        self.target = self.arm.true_state().position.copy() if self.config.command_mode == "position" else \
            np.zeros(self.robot.n_joints)
        return self.next_goal()

    def next_goal(self) -> np.ndarray:
        """Sample a new reachable goal (``simreal_ros.sim.env.sample_goal``; push: in the task's goal
        region, away from the puck) and make it current."""
        if self.world is not None:
            xy = self.world.sample_goal(self.goal_rng, self.world.puck_state()[0])
            return self.set_goal([xy[0], xy[1], self.world.goal_point[2]])
        return self.set_goal(sample_goal(self.robot, self.goal_rng))

    def set_goal(self, point: Sequence[float]) -> np.ndarray:
        """Make ``point`` (x, y, z in m, base frame; push: a point on the table, z ignored) the goal;
        raises ValueError if malformed."""
        p = self._checked_goal(point)
        if self.world is not None:
            self.goal = self.world.set_goal(p[:2])
            return self.goal.copy()
        self.goal = p
        self.arm.set_target(self.goal)
        return self.goal.copy()

    @staticmethod
    def _checked_goal(point: Sequence[float]) -> np.ndarray:
        p = np.asarray(point, dtype=float).ravel()
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"goal must be 3 finite numbers (x, y, z in m), got {list(np.ravel(point))}")
        return p

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, wall_now: float) -> dict[str, Any]:
        """Counters and timing for the ``/diagnostics`` status (values are plain numbers/strings)."""
        push = {}
        if self.world is not None:
            st = self.world.status()
            push = {"task": "push", "puck_goal_distance_m": round(st["distance"], 4), "puck_success": st["is_success"],
                    "tracker_dropped": self.world.tracker.dropped}
        return {"sim_time_s": round(self.time, 6), "real_time_factor": round(self.real_time_factor(wall_now), 4),
                "timing": self.config.timing, "episode": self.episode, **push,
                "dropped_measurements": self._dropped_before + self.arm.dropped, **self.counters,
                "last_rejection": self.last_rejection}

    def health(self, d: Mapping[str, Any]) -> tuple[str, str]:
        """``(level, message)`` of :meth:`diagnostics` ``d`` (level ``ok`` or ``warn``)."""
        rtf = d["real_time_factor"]
        if d["rejected_commands"] or d["sync_timeouts"]:
            return "warn", "commands rejected or lockstep timeouts"
        if self.config.timing == "paced" and rtf == rtf and rtf < 0.9:
            return "warn", f"slower than real time (RTF {rtf:.2f})"
        return "ok", "running"
