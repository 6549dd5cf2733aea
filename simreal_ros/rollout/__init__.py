"""Gated rollout of policy bundles: stages, promotion criteria and their evidence (ROS-free)."""
