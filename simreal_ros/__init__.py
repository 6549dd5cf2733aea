"""simreal_ros: take an RL policy trained in simulation onto a real Franka-style arm safely.

The core modules (robot, sim, shield, estimator, policy, bag) are ROS-free; ROS 2 nodes live
in ``simreal_ros.nodes`` and the node graph runner in ``simreal_ros.bringup``.
"""

import os as _os

# Offscreen rendering without a display: EGL works on a headless machine (Mesa llvmpipe).
if not _os.environ.get("DISPLAY"):
    _os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
