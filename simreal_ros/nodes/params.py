"""Declare and validate node parameters in one place per parameter.

Every parameter gets a ``ParameterDescriptor`` (description, range) and is checked when the
node reads it; a bad value raises :class:`ParameterError` naming the key, the value and what
is allowed, so a node refuses to configure instead of running with it.

Usage::

    spec = [
        Param("rate_hz", 100.0, "command rate", low=1.0, high=1000.0),
        Param("mode", "active", "shield mode", choices=("active", "shadow", "blend", "hold")),
        Param("stiffness", [600.0] * 7, "N m/rad", low=0.0, length=7),
    ]
    values = declare_and_read(node, spec)   # dict name -> validated value
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException


class ParameterError(ValueError):
    """A parameter has a value outside what is allowed; the message names the key."""


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type sets the parameter type), description, checks.

    ``low``/``high`` bound numbers (and every element of number lists); ``choices`` bounds
    strings; ``length`` fixes a list's length; ``check`` is a last validator returning an
    error text or ``None``.
    """

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: Sequence[str] | None = None
    length: int | None = None
    check: Callable[[Any], str | None] | None = None
    read_only: bool = False

    def allowed(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append(f"one of {list(self.choices)}")
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            parts.append(f"finite values in [{lo}, {hi}]")
        if self.length is not None:
            parts.append(f"exactly {self.length} values")
        return ", ".join(parts) or "any value of its type"

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only,
                                additional_constraints=self.allowed())
        is_int = isinstance(self.default, int) and not isinstance(self.default, bool)
        if (self.low is not None and self.high is not None and not isinstance(self.default, (list, tuple))):
            if is_int:
                d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(self.low), to_value=float(self.high),
                                                             step=0.0)]
        return d

    def validate(self, value: Any) -> Any:
        """Return ``value`` if allowed, else raise :class:`ParameterError`."""
        def fail(why: str) -> ParameterError:
            return ParameterError(f"parameter '{self.name}' = {value!r}: {why}; allowed: {self.allowed()}")

        if self.choices is not None and value not in self.choices:
            raise fail("not an allowed choice")
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and self.length is not None and len(items) != self.length:
            raise fail(f"has {len(items)} values")
        if self.low is not None or self.high is not None:
            for v in items:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise fail("not a finite number")
                if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                    raise fail("out of range")
        if self.check is not None:
            why = self.check(value)
            if why:
                raise fail(why)
        return value


def declare_and_read(node: Any, spec: Sequence[Param]) -> dict[str, Any]:
    """Declare every parameter of ``spec`` on ``node`` (if not yet declared), read and validate it."""
    out = {}
    for p in spec:
        if not node.has_parameter(p.name):
            default = list(p.default) if isinstance(p.default, tuple) else p.default
            try:
                node.declare_parameter(p.name, default, p.descriptor())
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # rclpy's own range/type check on a value from a params file or the command line
                raise ParameterError(f"parameter '{p.name}': {exc}; allowed: {p.allowed()}") from None
        value = node.get_parameter(p.name).value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            value = list(value)
        if isinstance(p.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[p.name] = p.validate(value)
    return out


def validate_update(spec: Sequence[Param], params: Sequence[Any]) -> tuple[bool, str]:
    """For ``add_on_set_parameters_callback``: check runtime updates against the same spec."""
    by_name = {p.name: p for p in spec}
    for prm in params:
        p = by_name.get(prm.name)
        if p is None:
            continue
        try:
            p.validate(list(prm.value) if isinstance(prm.value, (list, tuple)) else prm.value)
        except ParameterError as exc:
            return False, str(exc)
    return True, ""
