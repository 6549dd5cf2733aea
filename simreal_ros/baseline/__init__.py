"""Classical baseline reaching controller (ROS-free): DLS IK + jerk-limited interpolation."""

from simreal_ros.baseline.controller import BaselineConfig, BaselineController
from simreal_ros.baseline.ik import IKResult, solve_position_ik

__all__ = ["BaselineConfig", "BaselineController", "IKResult", "solve_position_ik"]
