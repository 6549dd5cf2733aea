"""MuJoCo simulation of the arm (ROS-free): the driven arm, randomization,
and the Gymnasium reaching task ``SimReal/Reach-v0``."""

import gymnasium as gym

ENV_ID = "SimReal/Reach-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="simreal_ros.sim.env:ReachEnv")
