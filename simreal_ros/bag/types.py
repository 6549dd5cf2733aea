"""Message definitions, type hashes and QoS descriptions for rosbag2 files (ROS-free).

Definitions and RIHS01 hashes come from the ``rosbags`` typestore of ROS 2 Kilted (the
distribution of the installed ROS wheels; the hashes match them). A type the typestore does
not know is looked up as ``share/<pkg>/msg/<Name>.msg`` under the Python prefix and
``AMENT_PREFIX_PATH`` (how rosbag2 finds definitions), dependencies included.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string", "wstring", "time", "duration"}


class UnknownTypeError(ValueError):
    """No message definition for a type: it cannot be recorded."""


@lru_cache(maxsize=1)
def typestore() -> Any:
    return get_typestore(Stores.ROS2_KILTED)


def _msg_file(msgtype: str) -> Path | None:
    pkg, _, name = msgtype.split("/")
    prefixes = [sys.prefix, *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    for prefix in prefixes:
        path = Path(prefix, "share", pkg, "msg", f"{name}.msg")
        if path.is_file():
            return path
    return None


def _register(msgtype: str, seen: set[str]) -> None:
    ts = typestore()
    if msgtype in ts.types or msgtype in seen:
        return
    seen.add(msgtype)
    path = _msg_file(msgtype)
    if path is None:
        raise UnknownTypeError(f"no message definition for {msgtype!r}: not in the rosbags Kilted typestore and no "
                               f"share/<pkg>/msg/<Name>.msg under {sys.prefix} or AMENT_PREFIX_PATH")
    text = path.read_text()
    pkg = msgtype.split("/")[0]
    for line in text.splitlines():
        tokens = line.split("#")[0].split()
        if len(tokens) < 2 or "=" in tokens[1]:
            continue  # blank, comment or constant
        base = re.split(r"[\[<]", tokens[0])[0]
        if base in _PRIMITIVES:
            continue
        dep = base if "/" in base else f"{pkg}/{base}"
        if dep.count("/") == 1:
            dep = dep.replace("/", "/msg/")
        _register(dep, seen)
    ts.register(get_types_from_msg(text, msgtype))


def message_definition(msgtype: str) -> tuple[str, str]:
    """(concatenated ``ros2msg`` definition as rosbag2 stores it, RIHS01 type hash) of ``msgtype``."""
    if msgtype.count("/") != 2:
        raise UnknownTypeError(f"message type {msgtype!r} is not of the form pkg/msg/Name")
    _register(msgtype, set())
    ts = typestore()
    text, _ = ts.generate_msgdef(msgtype, ros_version=2)
    return text, ts.hash_rihs01(msgtype)


def has_header(msgtype: str) -> bool:
    """True if the message's first field is a ``std_msgs/Header`` (its stamp leads the CDR data)."""
    fields = typestore().fielddefs.get(msgtype)
    if fields is None:
        return False
    first = fields[1][0] if fields[1] else None
    return bool(first) and first[0] == "header" and "std_msgs/msg/Header" in repr(first[1])


def header_stamp_ns(data: bytes | memoryview) -> int | None:
    """Header stamp (ns) of a CDR-encoded stamped message: int32 sec, uint32 nanosec after the 4-byte
    encapsulation header. ``None`` if the data is too short."""
    if len(data) < 12:
        return None
    order = "little" if data[1] == 1 else "big"
    sec = int.from_bytes(data[4:8], order, signed=True)
    nsec = int.from_bytes(data[8:12], order)
    return sec * 1_000_000_000 + nsec


def qos_profile(reliability: str = "reliable", durability: str = "volatile", history: str = "keep_last",
                depth: int = 10) -> dict[str, Any]:
    """One offered QoS profile in the rosbag2 metadata (version 9) format."""
    infinite = {"sec": 2147483647, "nsec": 4294967295}
    return {"history": history, "depth": int(depth), "reliability": reliability, "durability": durability,
            "deadline": dict(infinite), "lifespan": dict(infinite), "liveliness": "automatic",
            "liveliness_lease_duration": dict(infinite), "avoid_ros_namespace_conventions": False}
