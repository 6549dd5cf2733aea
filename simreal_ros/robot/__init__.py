"""Robot description: joints, limits, named poses and kinematics loaded from ``urdf/``."""

from simreal_ros.robot.model import LIMIT_KINDS, JointLimits, RobotDescriptionError, RobotModel, load_robot

__all__ = ["LIMIT_KINDS", "JointLimits", "RobotDescriptionError", "RobotModel", "load_robot"]
