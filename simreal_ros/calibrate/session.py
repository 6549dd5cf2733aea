"""One recorded session as the calibration fitter sees it (ROS-free, no bag types).

A :class:`Session` is what the bag reader extracts and what the fitter consumes: the driver's
measured joint states on the driver's stamps, and the position targets the shield actually sent
on the shield's own stamps (``/simreal/shield/sent``), both in robot joint order and seconds on
the same clock. Tests build sessions directly from the package's MuJoCo arm; the CLI builds
them from bags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class SessionError(ValueError):
    """A session that cannot be used for identification (the message says why)."""


@dataclass(frozen=True)
class SourceInfo:
    """Where a session came from (for the calibration's provenance)."""

    name: str  # bag directory name (or a test's label)
    duration_s: float
    sha256: str  # content hash of the bag's data files, "" when not from a bag
    controller: str = "unknown"  # what drove the arm: excitation | policy | baseline | unknown
    epoch_ns: int = 0  # the session's t = 0 on the bag's clock (ns since 1970; times are relative to it)


@dataclass(frozen=True)
class Session:
    """Measured states and sent commands of one continuous recording.

    Attributes:
        joint_names: robot joint order of every array's columns.
        state_t: (N,) driver stamps of the measured states, strictly increasing (s).
        q, dq: (N, n) measured joint positions (rad) and velocities (rad/s).
        tau: (N, n) measured joint efforts (N m), or ``None`` when the bag has none.
        cmd_t: (M,) the shield's stamps of the sent commands, strictly increasing (s).
        cmd: (M, n) sent position targets (rad); each holds until the next one.
        command_mode: the shield's command mode (only ``position`` is identifiable today).
        source: provenance.
        state_recv_t: (N,) when each state arrived (the recorder's log time, same clock as
            ``state_t``), or ``None`` when unknown. Only this tells the observation latency:
            a replay of the sent commands sees the action latency alone.
        cmd_recv_t: (M,) when each sent command reached the recorder (its log time), or
            ``None``. How much later than its stamp (the shield's send time) says how far the
            recorder itself ran behind, which the receive times of the states also carry.
    """

    joint_names: tuple[str, ...]
    state_t: np.ndarray
    q: np.ndarray
    dq: np.ndarray
    tau: np.ndarray | None
    cmd_t: np.ndarray
    cmd: np.ndarray
    command_mode: str = "position"
    source: SourceInfo = field(default_factory=lambda: SourceInfo("unnamed", 0.0, ""))
    state_recv_t: np.ndarray | None = None
    cmd_recv_t: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for name, t in (("state_t", self.state_t), ("cmd_t", self.cmd_t)):
            t = np.asarray(t)
            if t.ndim != 1 or len(t) < 2 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
                raise SessionError(f"{self.source.name}: {name} must be >= 2 finite, strictly increasing stamps")
        for name, arr, rows in (("q", self.q, len(self.state_t)), ("dq", self.dq, len(self.state_t)),
                                ("cmd", self.cmd, len(self.cmd_t)),
                                ("tau", self.tau, len(self.state_t))):
            if arr is None and name == "tau":
                continue
            a = np.asarray(arr)
            if a.shape != (rows, n) or not np.all(np.isfinite(a)):
                raise SessionError(f"{self.source.name}: {name} must be finite with shape {(rows, n)}, "
                                   f"got {a.shape}")

        if self.state_recv_t is not None:
            r = np.asarray(self.state_recv_t)
            if r.shape != np.shape(self.state_t) or not np.all(np.isfinite(r)):
                raise SessionError(f"{self.source.name}: state_recv_t must be finite with one stamp per state")
        if self.cmd_recv_t is not None:
            r = np.asarray(self.cmd_recv_t)
            if r.shape != np.shape(self.cmd_t) or not np.all(np.isfinite(r)):
                raise SessionError(f"{self.source.name}: cmd_recv_t must be finite with one stamp per command")

    @property
    def duration(self) -> float:
        """Time covered by both streams (s)."""
        return float(min(self.state_t[-1], self.cmd_t[-1]) - max(self.state_t[0], self.cmd_t[0]))
