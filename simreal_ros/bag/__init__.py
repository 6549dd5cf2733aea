"""Crash-safe rosbag2 (MCAP) recording, ROS-free: writer, metadata, recovery that keeps every
original, limit checks of recorded commands, ``simreal bag`` CLI."""

from simreal_ros.bag.recover import BagInputError, RecoveryError, needs_recovery, recover
from simreal_ros.bag.writer import STATUS_TOPIC, BagError, BagWriter

__all__ = ["BagError", "BagInputError", "BagWriter", "RecoveryError", "STATUS_TOPIC", "needs_recovery", "recover"]
