"""Declare and validate node parameters from the settings declared once in the cores.

A setting (:class:`simreal_ros.settings.Setting`, named :class:`Param` here) has its type,
default, bounds and description in one place, usually a field of the core's config dataclass
(``settings_of(ShieldConfig)``); nodes add only their wiring (topic names). Every parameter
gets a ``ParameterDescriptor`` (description, range) and is checked when the node reads it: a
bad value raises :class:`ParameterError` naming the key, the value and what is allowed, so a
node refuses to configure instead of running with it.

Usage::

    spec = [*settings_of(ShieldConfig), Param("state_topic", "/simreal/state_estimate", "JointState in")]
    values = declare_and_read(node, spec)   # dict name -> validated value
"""

from __future__ import annotations

from typing import Any, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from simreal_ros.settings import Setting, SettingError

Param = Setting
ParameterError = SettingError

__all__ = ["Param", "ParameterError", "declare_and_read", "descriptor", "ros_default", "validate_update"]


def ros_default(p: Setting) -> Any:
    """The default as rclpy declares it (lists, not tuples)."""
    return list(p.default) if isinstance(p.default, tuple) else p.default


def descriptor(p: Setting, ranges: bool = True) -> ParameterDescriptor:
    """The ROS parameter descriptor of ``p`` (``ranges=False``: no numeric range, so a bad
    value from a params file reaches :func:`declare_and_read`'s error instead of aborting)."""
    d = ParameterDescriptor(name=p.name, description=p.doc(), read_only=p.read_only,
                            additional_constraints=p.allowed())
    if ranges and p.low is not None and p.high is not None and p.kind in (int, float):
        if p.kind is int:
            d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high), step=0.0)]
    return d


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return list(value)
    return value


def declare_and_read(node: Any, spec: Sequence[Setting]) -> dict[str, Any]:
    """Declare every parameter of ``spec`` on ``node`` (if not yet declared), read and validate it."""
    out = {}
    for p in spec:
        if not node.has_parameter(p.name):
            try:
                node.declare_parameter(p.name, ros_default(p), descriptor(p))
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                raise ParameterError(f"parameter '{p.name}': {exc}; allowed: {p.allowed()}") from None
        value = _plain(node.get_parameter(p.name).value)
        if p.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[p.name] = _plain(p.validate(value))
    return out


def validate_update(spec: Sequence[Setting], params: Sequence[Any]) -> tuple[bool, str]:
    """For ``add_on_set_parameters_callback``: check runtime updates against the same spec."""
    by_name = {p.name: p for p in spec}
    for prm in params:
        p = by_name.get(prm.name)
        if p is None:
            continue
        try:
            p.validate(_plain(prm.value))
        except ParameterError as exc:
            return False, str(exc)
    return True, ""
