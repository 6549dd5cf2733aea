"""The hot path's messages as CDR bytes: decoded for raw subscriptions, encoded for raw publishing.

rclpy turns every received message into Python objects (``convert_to_py``: a message object, its
header, a string per joint name, one array per field) and every published one back; on this
2-core VM that was 43 % of the active CPU of a node whose callback did nothing with a 7-joint
``sensor_msgs/JointState`` at 100 Hz (py-spy, 2026-12-03). The estimator's input and output, the
policy's input and its two outputs go through here instead: a raw subscription hands over the
serialized bytes, which are read with ``struct`` and ``numpy.frombuffer``; a publisher given
``bytes`` sends them as they are.

The format is plain CDR (XCDR1, the encapsulation ``rmw_fastrtps`` and ``rmw_cyclonedds`` use for
ROS 2 types), little or big endian: a 4-byte encapsulation header, then every primitive aligned to
its size from the end of that header. Anything else (XCDR2, a truncated or inconsistent buffer)
raises :class:`WireFormatError`; the nodes then fall back to rclpy's own deserializer, so an
unusual middleware costs speed, never messages. ``test_wire.py`` checks both directions against
``rclpy.serialization``. No ROS imports.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

_ENDIAN = {b"\x00\x01": "<", b"\x00\x00": ">"}  # CDR_LE, CDR_BE (XCDR1 plain)
_LE_HEADER = b"\x00\x01\x00\x00"


class WireFormatError(ValueError):
    """A buffer that is not plain CDR of the expected type (or is truncated)."""


def _pad(offset: int, align: int) -> int:
    """Bytes of padding before a primitive of ``align`` bytes at payload ``offset``."""
    return -offset % align


def _string(s: str) -> bytes:
    b = s.encode() + b"\x00"
    return struct.pack("<I", len(b)) + b


class _Reader:
    """Sequential CDR reads over one buffer (offsets count from the end of the 4-byte header)."""

    __slots__ = ("buf", "pos", "e")

    def __init__(self, buf: bytes) -> None:
        if len(buf) < 4:
            raise WireFormatError(f"{len(buf)} bytes: shorter than a CDR encapsulation header")
        e = _ENDIAN.get(buf[:2])
        if e is None:
            raise WireFormatError(f"encapsulation {buf[:2].hex()}: not plain CDR (XCDR1)")
        self.buf, self.pos, self.e = buf, 0, e

    def u32(self) -> int:
        self.pos += _pad(self.pos, 4)
        try:
            (v,) = struct.unpack_from(self.e + "I", self.buf, 4 + self.pos)
        except struct.error as exc:
            raise WireFormatError(f"truncated at byte {4 + self.pos}") from exc
        self.pos += 4
        return v

    def i32(self) -> int:
        v = self.u32()
        return v - (1 << 32) if v >= 1 << 31 else v

    def string(self) -> str:
        n = self.u32()
        start = 4 + self.pos
        if n < 1 or start + n > len(self.buf):
            raise WireFormatError(f"string of {n} bytes at byte {start} in a {len(self.buf)}-byte buffer")
        self.pos += n
        return self.buf[start:start + n - 1].decode()

    def doubles(self) -> np.ndarray:
        n = self.u32()
        if n:
            self.pos += _pad(self.pos, 8)
        start = 4 + self.pos
        if start + 8 * n > len(self.buf):
            raise WireFormatError(f"{n} doubles at byte {start} in a {len(self.buf)}-byte buffer")
        self.pos += 8 * n
        return np.frombuffer(self.buf, dtype=self.e + "f8", count=n, offset=start)


class RawJointState:
    """A decoded ``sensor_msgs/JointState``: what the nodes read of one (``position``, ``velocity``
    and ``effort`` are read-only float64 arrays over the received bytes)."""

    __slots__ = ("stamp", "frame_id", "name", "position", "velocity", "effort")

    def __init__(self, stamp, frame_id, name, position, velocity, effort) -> None:
        self.stamp, self.frame_id, self.name = stamp, frame_id, name
        self.position, self.velocity, self.effort = position, velocity, effort


class JointStateDecoder:
    """Decodes JointState CDR bytes. The frame id and joint names of a stream rarely change: the
    bytes that held them last time are compared first and their decoded values reused."""

    def __init__(self) -> None:
        self._names_bytes = b""
        self._names: tuple[str, str, tuple[str, ...], int] | None = None  # endian, frame, names, end offset

    def decode(self, buf: bytes) -> RawJointState:
        r = _Reader(buf)
        sec, nanosec = r.i32(), r.u32()
        cached = self._names
        if cached is not None and cached[0] == r.e and buf[12:12 + len(self._names_bytes)] == self._names_bytes:
            _, frame_id, names, r.pos = cached
        else:
            frame_id = r.string()
            names = tuple(r.string() for _ in range(r.u32()))
            self._names_bytes = buf[12:4 + r.pos]
            self._names = (r.e, frame_id, names, r.pos)
        return RawJointState(sec + 1e-9 * nanosec, frame_id, names, r.doubles(), r.doubles(), r.doubles())


class JointStateEncoder:
    """``sensor_msgs/JointState`` CDR bytes (little endian) for fixed joint names and frame id:
    everything between the stamp and the first array is built once."""

    def __init__(self, names: Sequence[str], frame_id: str = "") -> None:
        body = _string(frame_id)
        body += _pad(8 + len(body), 4) * b"\x00" + struct.pack("<I", len(names))
        for n in names:
            body += _pad(8 + len(body), 4) * b"\x00" + _string(n)
        self._fixed = body
        self._n = len(names)
        self._offset = 8 + len(body)  # payload offset after the names

    def encode(self, sec: int, nanosec: int, position=None, velocity=None, effort=None) -> bytes:
        parts = [_LE_HEADER, struct.pack("<iI", sec, nanosec), self._fixed]
        off = self._offset
        for values in (position, velocity, effort):
            off, data = _double_seq(off, values, self._n)
            parts += data
        return b"".join(parts)


def _double_seq(off: int, values, expect: int | None = None) -> tuple[int, list[bytes]]:
    """(new offset, parts) of a ``sequence<double>`` at payload offset ``off``."""
    if values is None:
        pad = _pad(off, 4)
        return off + pad + 4, [pad * b"\x00", b"\x00\x00\x00\x00"]
    a = np.ascontiguousarray(values, dtype="<f8").ravel()
    if expect is not None and a.size != expect:
        raise ValueError(f"{a.size} values for {expect} joints")
    pad = _pad(off, 4)
    off += pad + 4
    parts = [pad * b"\x00", struct.pack("<I", a.size)]
    if a.size:
        pad8 = _pad(off, 8)
        parts += [pad8 * b"\x00", a.tobytes()]
        off += pad8 + 8 * a.size
    return off, parts


class Float64ArrayEncoder:
    """``std_msgs/Float64MultiArray`` CDR bytes (little endian) for a fixed layout: ``dims`` as
    (label, size, stride) triples, ``data_offset`` 0."""

    def __init__(self, dims: Sequence[tuple[str, int, int]] = ()) -> None:
        body = struct.pack("<I", len(dims))
        for label, size, stride in dims:
            body += _pad(len(body), 4) * b"\x00" + _string(label)
            body += _pad(len(body), 4) * b"\x00" + struct.pack("<II", size, stride)
        body += _pad(len(body), 4) * b"\x00" + struct.pack("<I", 0)
        self._fixed = _LE_HEADER + body
        self._offset = len(body)

    def encode(self, data) -> bytes:
        _, parts = _double_seq(self._offset, data)
        return b"".join([self._fixed, *parts])
