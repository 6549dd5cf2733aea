"""The hot path's CDR codec (simreal_ros.nodes.wire) against rclpy's own serialization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simreal_ros.nodes.wire import (
    Float64ArrayEncoder,
    JointStateDecoder,
    JointStateEncoder,
    WireFormatError,
)

pytestmark = pytest.mark.ros  # rclpy.serialization is the reference

names_st = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12), max_size=9,
                    unique=True)
floats_st = st.floats(allow_nan=True, allow_infinity=True, width=64)


def _joint_state(names, sec, nanosec, frame_id, pos, vel, eff):
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame_id
    msg.name, msg.position, msg.velocity, msg.effort = list(names), pos, vel, eff
    return msg


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


@settings(max_examples=150, deadline=None)
@given(names=names_st, sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 999_999_999),
       frame_id=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
       data=st.data())
def test_decoded_joint_states_equal_rclpys(names, sec, nanosec, frame_id, data):
    from rclpy.serialization import serialize_message

    n = len(names)
    pos, vel, eff = (data.draw(st.one_of(st.just([]), st.lists(floats_st, min_size=n, max_size=n)))
                     for _ in range(3))
    buf = serialize_message(_joint_state(names, sec, nanosec, frame_id, pos, vel, eff))
    dec = JointStateDecoder()
    for _ in range(2):  # the second time through the names cache
        got = dec.decode(buf)
        assert got.name == tuple(names) and got.frame_id == frame_id
        assert got.stamp == sec + 1e-9 * nanosec
        assert _same(got.position, pos) and _same(got.velocity, vel) and _same(got.effort, eff)


def test_the_names_cache_follows_a_stream_whose_names_change():
    from rclpy.serialization import serialize_message

    dec = JointStateDecoder()
    a = serialize_message(_joint_state(["a", "b"], 1, 0, "", [1.0, 2.0], [], []))
    b = serialize_message(_joint_state(["ab", "c"], 2, 0, "", [3.0, 4.0], [5.0, 6.0], []))
    assert dec.decode(a).name == ("a", "b")
    got = dec.decode(b)
    assert got.name == ("ab", "c") and list(got.velocity) == [5.0, 6.0]
    assert dec.decode(a).name == ("a", "b")


@settings(max_examples=100, deadline=None)
@given(names=names_st, sec=st.integers(0, 2**31 - 1), nanosec=st.integers(0, 999_999_999), data=st.data())
def test_encoded_joint_states_read_back_with_rclpy(names, sec, nanosec, data):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    n = len(names)
    arrays = [data.draw(st.one_of(st.none(), st.lists(floats_st, min_size=n, max_size=n))) for _ in range(3)]
    buf = JointStateEncoder(names).encode(sec, nanosec, *arrays)
    # not compared byte for byte: Fast DDS leaves its padding bytes uninitialised
    back = deserialize_message(buf, JointState)
    assert back.name == list(names) and (back.header.stamp.sec, back.header.stamp.nanosec) == (sec, nanosec)
    for got, want in zip((back.position, back.velocity, back.effort), arrays):
        assert _same(got, want or [])


@settings(max_examples=100, deadline=None)
@given(dims=st.lists(st.tuples(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
                               st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=4),
       values=st.lists(floats_st, max_size=40))
def test_encoded_float64_arrays_read_back_with_rclpy(dims, values):
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Float64MultiArray

    buf = Float64ArrayEncoder(dims).encode(values)
    back = deserialize_message(buf, Float64MultiArray)
    assert [(d.label, d.size, d.stride) for d in back.layout.dim] == [tuple(d) for d in dims]
    assert _same(back.data, values) and back.layout.data_offset == 0


def test_what_is_not_plain_cdr_or_is_cut_short_is_refused_by_name():
    from rclpy.serialization import serialize_message

    buf = serialize_message(_joint_state(["j1", "j2"], 1, 2, "base", [1.0, 2.0], [3.0, 4.0], []))
    dec = JointStateDecoder()
    for bad, why in [(b"", "shorter than"), (b"\x00\x07\x00\x00" + buf[4:], "not plain CDR"),
                     (buf[:30], "truncated|string of|doubles at"), (buf[:-9], "doubles at")]:
        with pytest.raises(WireFormatError, match=why):
            JointStateDecoder().decode(bad)
    assert dec.decode(buf).name == ("j1", "j2")  # and a good one after
    with pytest.raises(WireFormatError):
        dec.decode(buf[:-9])  # cut after the cached names
    with pytest.raises(ValueError, match="3 values for 2 joints"):
        JointStateEncoder(["a", "b"]).encode(0, 0, [1.0, 2.0, 3.0])


def test_what_the_codec_cannot_read_goes_through_rclpys_deserializer():
    """A middleware that sends XCDR2 (8-byte values aligned to 4) still gets its samples read;
    bytes neither can read are a ValueError naming both causes, which the nodes count as bad input."""
    import struct

    from simreal_ros.nodes.common import take_joint_state

    xcdr2 = (b"\x00\x07\x00\x00" + struct.pack("<iI", 5, 6) + struct.pack("<I", 1) + b"\x00" + b"\x00" * 3
             + struct.pack("<I", 1) + struct.pack("<I", 2) + b"a\x00" + b"\x00\x00"
             + struct.pack("<I", 1) + struct.pack("<d", 1.5) + struct.pack("<II", 0, 0))
    with pytest.raises(WireFormatError):
        JointStateDecoder().decode(xcdr2)
    got = take_joint_state(JointStateDecoder(), xcdr2)
    assert got.name == ("a",) and list(got.position) == [1.5] and len(got.velocity) == 0
    assert got.stamp == pytest.approx(5.000000006)
    with pytest.raises(ValueError, match="not plain CDR.*rclpy: failed to deserialize"):
        take_joint_state(JointStateDecoder(), b"\x00\x07\x00\x00\x01")
