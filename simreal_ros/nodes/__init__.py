"""ROS 2 nodes: thin adapters that validate parameters, wire topics/services/timers and call
the ROS-free cores. Default topic names (all remappable, all configurable):

==========================================  =================================  =========================
topic                                       type                               publisher
==========================================  =================================  =========================
/joint_states                               sensor_msgs/JointState             sim_bridge / real driver
/simreal/state_estimate                     sensor_msgs/JointState             state_estimator
/simreal/state_covariance                   std_msgs/Float64MultiArray         state_estimator
/simreal/belief                             std_msgs/Float64MultiArray         state_estimator
/simreal/goal                               geometry_msgs/PointStamped         sim_bridge / user
/simreal/object_pose                        geometry_msgs/PoseStamped          sim_bridge (push) / tracker
/simreal/policy/command                     std_msgs/Float64MultiArray         policy_executor (labelled kind)
/simreal/policy/record                      std_msgs/Float64MultiArray         policy_executor (each cycle; fields
                                                                               labelled in layout.dim, see
                                                                               simreal_ros.policy.record)
/simreal/policy/bundle                      std_msgs/String (JSON, latched)    policy_executor (bundle identity)
/simreal/policy/latent                      std_msgs/Int32                     simreal explore / user (exploration
                                                                               family's code)
/simreal/baseline/command                   std_msgs/Float64MultiArray         baseline_controller / push_baseline
/simreal/excitation/command                 std_msgs/Float64MultiArray         excitation_controller (labelled)
/forward_position_controller/commands       std_msgs/Float64MultiArray         safety_shield (sent, position mode)
/forward_effort_controller/commands         std_msgs/Float64MultiArray         safety_shield (sent, effort mode)
/simreal/shield/sent                        sensor_msgs/JointState             safety_shield (sent, its own stamps)
/simreal/shield/interventions               diagnostic_msgs/DiagnosticArray    safety_shield
/simreal/shield/shadow_command              std_msgs/Float64MultiArray         safety_shield (shadow mode)
/simreal/shield/shadow_interventions        diagnostic_msgs/DiagnosticArray    safety_shield (shadow mode)
/simreal/shield/revert                      std_msgs/String (reason)           monitors -> shield
/simreal/sim/ground_truth                   sensor_msgs/JointState             sim_bridge (eval only)
/simreal/sim/object_ground_truth            geometry_msgs/PoseStamped          sim_bridge (push, eval only)
/simreal/sim/goal_request                   geometry_msgs/PointStamped         user -> sim_bridge
/simreal/recorder/status                    (in the bag only)                  recorder counters
/diagnostics                                diagnostic_msgs/DiagnosticArray    every node
/clock                                      rosgraph_msgs/Clock                sim_bridge (unpaced)
==========================================  =================================  =========================
"""
