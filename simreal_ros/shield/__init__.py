"""Safety shield (ROS-free core): nothing it sends exceeds a limit of the robot model.

* :class:`Shield` / :class:`ShieldConfig` / :class:`ShieldOutput` / :class:`Intervention`:
  the per-cycle filter with watchdogs, e-stop, modes and automatic revert (``core``).
* :func:`check_limits`: re-check a recorded command sequence against every limit kind
  with the same definitions (``limits``); ``simreal_ros.bag.check.stamped_commands`` reads
  that sequence, by joint name and with the shield's own times, from a recording.
"""

from simreal_ros.shield.config import COMMAND_MODES, ShieldConfig
from simreal_ros.shield.core import SOURCES, Intervention, Shield, ShieldOutput
from simreal_ros.shield.limits import KINDS, ShieldLimits, Violation, check_limits
from simreal_ros.shield.modes import MODES, REVERT_TARGETS

__all__ = [
    "COMMAND_MODES",
    "KINDS",
    "MODES",
    "REVERT_TARGETS",
    "SOURCES",
    "Intervention",
    "Shield",
    "ShieldConfig",
    "ShieldLimits",
    "ShieldOutput",
    "Violation",
    "check_limits",
]
