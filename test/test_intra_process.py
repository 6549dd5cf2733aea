"""In-process handover between composed nodes (simreal_ros/nodes/intra.py, issue 10), with real
rclpy nodes: what a local subscriber gets, when, in which order, and that DDS still carries
every message to other processes' subscribers (here: another Context, its own participant)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.ros


@pytest.fixture
def composed():
    """A context with in-process delivery on (as the composed runners enable it), its executor,
    and a second, plain context standing for another process."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from simreal_ros.nodes import intra

    ctx, other = rclpy.Context(), rclpy.Context()
    rclpy.init(context=ctx)
    rclpy.init(context=other)
    bus = intra.enable(ctx)
    ex, ex_other = SingleThreadedExecutor(context=ctx), SingleThreadedExecutor(context=other)
    nodes = []

    def node(name, context=ctx):
        n = rclpy.create_node(name, context=context)
        (ex if context is ctx else ex_other).add_node(n)
        nodes.append(n)
        return n

    def spin_until(cond, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.005)
            ex_other.spin_once(timeout_sec=0.005)
            if cond():
                return True
        return False

    yield {"bus": bus, "ctx": ctx, "other": other, "node": node, "spin_until": spin_until}
    for n in nodes:
        n.destroy_node()
    intra.disable(ctx)
    rclpy.try_shutdown(context=ctx)
    rclpy.try_shutdown(context=other)


def test_a_local_subscriber_gets_the_message_inside_publish_and_other_processes_still_get_it(composed):
    from std_msgs.msg import Float64MultiArray

    from simreal_ros.nodes import intra
    from simreal_ros.nodes.common import LATEST_COMMAND_QOS

    pub_node, sub_node = composed["node"]("intra_pub"), composed["node"]("intra_sub")
    got, remote = [], []
    # made before its publisher: it starts on DDS and moves to the handover when the publisher appears
    sub = intra.subscription(sub_node, Float64MultiArray, "/intra_test/cmd", got.append, LATEST_COMMAND_QOS)
    assert sub.dds is not None
    pub = intra.publisher(pub_node, Float64MultiArray, "/intra_test/cmd", 10)
    assert sub.dds is None, "a local publisher exists: the subscription takes nothing from DDS"
    far = composed["node"]("intra_far", context=composed["other"])
    far.create_subscription(Float64MultiArray, "/intra_test/cmd", remote.append, LATEST_COMMAND_QOS)
    assert composed["spin_until"](lambda: pub.dds.get_subscription_count() >= 1)

    msg = Float64MultiArray(data=[1.0, 2.0])
    pub.publish(msg)
    assert len(got) == 1 and got[0] is msg, "delivered during publish, no executor, the object itself"
    assert composed["spin_until"](lambda: remote), "the DDS publication still reaches another process"
    assert list(remote[0].data) == [1.0, 2.0]
    composed["spin_until"](lambda: False, timeout=0.3)
    assert len(got) == 1, "no second copy through DDS"


def test_deliveries_are_breadth_first_like_the_estimate_before_the_proposal(composed):
    """The shield subscribes to the estimate and to the proposal the policy computes from it: it
    must see the estimate first (DDS would deliver them in that order too)."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from simreal_ros.nodes import intra

    est_node, pol_node, sh_node = (composed["node"](n) for n in ("intra_est", "intra_pol", "intra_sh"))
    seen = []
    est_pub = intra.publisher(est_node, JointState, "/intra_test/estimate", 10)
    prop_pub = intra.publisher(pol_node, Float64MultiArray, "/intra_test/proposal", 10)

    def policy(msg):
        seen.append(("policy", "estimate"))
        prop_pub.publish(Float64MultiArray(data=list(msg.position)))

    intra.subscription(pol_node, JointState, "/intra_test/estimate", policy, 1)
    intra.subscription(sh_node, JointState, "/intra_test/estimate", lambda m: seen.append(("shield", "estimate")), 1)
    intra.subscription(sh_node, Float64MultiArray, "/intra_test/proposal",
                       lambda m: seen.append(("shield", "proposal")), 1)
    est_pub.publish(JointState(position=[0.5]))
    assert seen == [("policy", "estimate"), ("shield", "estimate"), ("shield", "proposal")]


def test_a_subscription_takes_dds_again_when_its_local_publisher_goes(composed):
    from std_msgs.msg import String

    from simreal_ros.nodes import intra

    pub_node, sub_node = composed["node"]("intra_pub2"), composed["node"]("intra_sub2")
    pub = intra.publisher(pub_node, String, "/intra_test/s", 10)
    got = []
    sub = intra.subscription(sub_node, String, "/intra_test/s", got.append, 10)
    assert sub.dds is None
    pub.destroy()
    assert sub.dds is not None
    far = composed["node"]("intra_far2", context=composed["other"])
    far_pub = far.create_publisher(String, "/intra_test/s", 10)
    assert composed["spin_until"](lambda: far_pub.get_subscription_count() >= 1)
    far_pub.publish(String(data="from another process"))
    assert composed["spin_until"](lambda: got)
    assert got[0].data == "from another process"


def test_without_enable_publisher_and_subscription_are_rclpys_own(ros_node):
    from rclpy.publisher import Publisher
    from rclpy.subscription import Subscription
    from std_msgs.msg import String

    from simreal_ros.nodes import intra

    got = []
    pub = intra.publisher(ros_node, String, "/intra_test/plain", 10)
    sub = intra.subscription(ros_node, String, "/intra_test/plain", got.append, 10)
    assert isinstance(pub, Publisher) and isinstance(sub, Subscription)
    pub.publish(String(data="x"))
    assert not got, "nothing is delivered inside publish"
    assert ros_node.spin_until(lambda: got)


def test_the_composed_runner_turns_it_on_only_when_every_node_keeps_it_on():
    from simreal_ros.bringup.runner import intra_process

    assert intra_process([{}, {"executor": "events"}])
    assert not intra_process([{}, {"intra_process": False}])
