"""State estimation: per-joint Kalman filter, hidden-parameter belief, excitation trajectories."""
