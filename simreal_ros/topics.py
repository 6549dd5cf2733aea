"""The graph's topic names, declared once: the bag readers (dataset, calibration, report,
evidence) and the session tools name a topic from here, not by re-typing it. (Nodes take their
topics as parameters, whose defaults these match; a remapped graph records the remapped names.)"""

JOINT_STATES = "/joint_states"
STATE_ESTIMATE = "/simreal/state_estimate"
GOAL = "/simreal/goal"
OBJECT_POSE = "/simreal/object_pose"
#: the commands the shield sent (Float64MultiArray, the controller's input) ...
SENT = "/forward_position_controller/commands"
#: ... and the same commands stamped with the shield's step time (JointState)
STAMPED_SENT = "/simreal/shield/sent"
POLICY_COMMAND = "/simreal/policy/command"
POLICY_RECORD = "/simreal/policy/record"
POLICY_BUNDLE = "/simreal/policy/bundle"
BASELINE_COMMAND = "/simreal/baseline/command"
INTERVENTIONS = "/simreal/shield/interventions"
SHADOW_COMMAND = "/simreal/shield/shadow_command"
SHADOW_INTERVENTIONS = "/simreal/shield/shadow_interventions"
DIAGNOSTICS = "/diagnostics"
