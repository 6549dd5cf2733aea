"""Crash-safe rosbag2 (MCAP) recording, ROS-free: writer, metadata, recovery, ``simreal bag`` CLI."""

from simreal_ros.bag.recover import needs_recovery, recover
from simreal_ros.bag.writer import STATUS_TOPIC, BagError, BagWriter

__all__ = ["BagError", "BagWriter", "STATUS_TOPIC", "needs_recovery", "recover"]
