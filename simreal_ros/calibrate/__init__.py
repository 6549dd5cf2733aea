"""Calibrating the simulator from recorded sessions (ROS-free).

``session``: what a recorded bag holds for identification (measured joint states and the
commands the shield sent, each on its own stamps). The fitter works on :class:`Session` objects
only, so it is tested without bags and fed by the bag reader in the CLI.
"""
