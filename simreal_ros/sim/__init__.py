"""MuJoCo simulation of the arm (ROS-free): the driven arm, randomization, and the Gymnasium
tasks ``SimReal/Reach-v0`` (reaching) and ``SimReal/Push-v0`` (puck pushing)."""

import gymnasium as gym

ENV_ID = "SimReal/Reach-v0"

PUSH_ENV_ID = "SimReal/Push-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="simreal_ros.sim.env:ReachEnv")
if PUSH_ENV_ID not in gym.registry:
    gym.register(id=PUSH_ENV_ID, entry_point="simreal_ros.sim.push_env:PushEnv")
