"""Safety shield (ROS-free core): nothing it sends exceeds a limit of the robot model.

* :class:`Shield` / :class:`ShieldConfig` / :class:`ShieldOutput` / :class:`Intervention`:
  the per-cycle filter with watchdogs, e-stop, modes and automatic revert (``core``).
* :func:`check_limits`: re-check a recorded command sequence against every limit kind
  with the same definitions (``limits``); :func:`stamped_commands` extracts the sequence
  with the shield's own times from its ``/simreal/shield/sent`` messages.
"""

from simreal_ros.shield.config import COMMAND_MODES, ShieldConfig
from simreal_ros.shield.core import SOURCES, Intervention, Shield, ShieldOutput
from simreal_ros.shield.limits import KINDS, ShieldLimits, Violation, check_limits, stamped_commands
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
    "stamped_commands",
]
