"""Robot description: joints, limits, impedance gains, named poses and kinematics loaded from
``urdf/`` and ``config/``, with the manufacturer's published limits as the ceiling."""

from simreal_ros.robot.errors import RobotDescriptionError
from simreal_ros.robot.gains import ImpedanceGains, check_gains
from simreal_ros.robot.loader import load_robot
from simreal_ros.robot.model import LIMIT_KINDS, JointLimits, RobotModel

__all__ = ["LIMIT_KINDS", "ImpedanceGains", "JointLimits", "RobotDescriptionError", "RobotModel", "check_gains",
           "load_robot"]
