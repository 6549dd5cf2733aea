"""State estimation: per-joint Kalman filter, hidden-parameter belief, excitation trajectories.

ROS-free; the ``state_estimator`` node (:mod:`simreal_ros.nodes.estimator_node`) wraps
:class:`StateEstimator`.
"""

from simreal_ros.estimator.belief import BeliefConfig, BeliefState, HiddenParameterBelief, parameter_names
from simreal_ros.estimator.estimator import Estimate, EstimatorConfig, StateEstimator, covariance_vector
from simreal_ros.estimator.excitation import ExcitationConfig, ExcitationTrajectory
from simreal_ros.estimator.kalman import JointKalmanFilter, KalmanConfig

__all__ = [
    "BeliefConfig", "BeliefState", "Estimate", "EstimatorConfig", "ExcitationConfig", "ExcitationTrajectory",
    "HiddenParameterBelief", "JointKalmanFilter", "KalmanConfig", "StateEstimator", "covariance_vector",
    "parameter_names",
]
