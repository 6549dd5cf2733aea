"""Drift across real processes: the whole sim graph (every node its own process over DDS), the sim
bridge's position bias shifting the measured joint positions the policy sees; the policy's drift
monitor raises sustained observation drift and the shield reverts to the baseline with the drift
reason (its /diagnostics 'reverted' and the revert message on /simreal/shield/revert)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from simreal_ros.bringup.graph import GraphOptions, build_graph

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]
#: |bias| per joint (random sign, seeded): 0.5 rad is ~8 training std of joints 6 and 7
BIAS = 0.5


def test_a_biased_state_makes_the_shield_revert_with_the_drift_reason(tmp_path, ros_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from simreal_ros.bringup.runner import ProcessGraph

    nodes = []
    for n in build_graph(GraphOptions(record=False, seed=3)):
        if n.name == "sim_bridge":
            n = replace(n, parameters={**n.parameters, "bias": {"position": BIAS}})
        if n.name == "policy_executor":
            # the single-observation OOD monitor may see the bias too: its revert is tested elsewhere
            # (test_policy_node); here only the drift monitor may ask for one
            n = replace(n, parameters={**n.parameters, "ood_revert": False})
        nodes.append(n)
    shield, policy, reverts, peaks = {}, {}, [], {}

    def on_diagnostics(m):
        for st in m.status:
            if st.name == "safety_shield":
                shield.update({kv.key: kv.value for kv in st.values})
            elif st.name.startswith("policy_executor"):
                values = {kv.key: kv.value for kv in st.values}
                policy.update(values)
                policy["message"] = st.message
                # the most seen: the policy's later reports may come after its monitor restarted
                for key in ("drift_alarms", "drift_obs_score"):
                    if key in values:
                        peaks[key] = max(peaks.get(key, 0.0), float(values[key]))

    ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    ros_node.create_subscription(String, "/simreal/shield/revert", lambda m: reverts.append(m.data), 10)
    graph = ProcessGraph(nodes, tmp_path)
    graph.start()
    try:
        assert ros_node.spin_until(lambda: int(policy.get("commands", 0)) > 0, 90.0), (policy, graph.failed())
        assert ros_node.spin_until(lambda: "drift" in shield.get("reverted", ""), 60.0), (shield, policy, reverts)
        # the policy's diagnostics (1 Hz) report the alarm that asked for it
        assert ros_node.spin_until(lambda: peaks.get("drift_alarms", 0) >= 1, 10.0), (peaks, policy)
        assert not graph.failed(), graph.failed()
    finally:
        graph.stop()
    drift = [r for r in reverts if ": drift: " in r]
    assert drift and "observation window mean" in drift[0], reverts
    assert not [r for r in reverts if "out of training distribution" in r]  # the OOD revert was off
    assert shield["mode"] == "shadow"  # reverted to the baseline (revert_target baseline)
    assert drift[0] in shield["reverted"]
    assert peaks.get("drift_alarms", 0) >= 1 and peaks.get("drift_obs_score", 0) > 5.0, (peaks, policy)
