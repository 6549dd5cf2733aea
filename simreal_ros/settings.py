"""Settings declared once: a config dataclass field carries its type, default, bounds and
description, and everything else derives from it (validation of the core's config, the
node's ROS parameters and descriptors, YAML checks, docs), as generate_parameter_library
does for C++ nodes. No ROS imports.

Usage::

    @dataclass(frozen=True)
    class ShieldConfig:
        command_timeout: float = setting(0.1, "s without a fresh command -> stop", low=0.0, low_open=True, high=10.0)
        mode: str = setting("active", "who drives", choices=MODES)

        def __post_init__(self) -> None:
            validate_fields(self)        # raises SettingError naming the field, value and what is allowed

    settings_of(ShieldConfig)            # [Setting(name="command_timeout", default=0.1, ...), ...]

A value is accepted only with the declared type: ``True`` is not a number, ``"14"`` is not a
number, ``1`` is accepted for a float setting (and stored as ``1.0``), a float for an int
setting is refused; lists/tuples are stored as tuples.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence


class SettingError(ValueError):
    """A setting has a value outside what is allowed; the message names the key."""


@dataclass(frozen=True)
class Setting:
    """One setting: name, default (its type is the setting's type), description, checks.

    ``low``/``high`` bound numbers (and every element of number lists; ``low_open`` makes the
    lower bound exclusive); ``choices`` bounds strings; ``length`` fixes a list's length;
    ``check`` is a last validator returning an error text or ``None``; ``unit`` is shown in
    the docs and descriptors.
    """

    name: str
    default: Any
    description: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: Sequence[str] | None = None
    length: int | None = None
    check: Callable[[Any], str | None] | None = None
    read_only: bool = False

    @property
    def kind(self) -> type:
        """bool, int, float, str, or list (of numbers, or of strings)."""
        d = self.default
        if isinstance(d, (list, tuple)):
            return list
        return type(d)

    @property
    def element_kind(self) -> type:
        """For list settings: the type of the elements (float unless the default holds strings)."""
        d = self.default
        if isinstance(d, (list, tuple)) and d and all(isinstance(x, str) for x in d):
            return str
        return float

    def allowed(self) -> str:
        parts = []
        if self.choices is not None:
            parts.append(f"one of {list(self.choices)}")
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            parts.append(f"finite values in {'(' if self.low_open else '['}{lo}, {hi}]")
        if self.length is not None:
            parts.append(f"exactly {self.length} values")
        if not parts:
            parts.append(f"a {self.kind.__name__}")
        return ", ".join(parts)

    def doc(self) -> str:
        unit = f" [{self.unit}]" if self.unit else ""
        return f"{self.description}{unit}; allowed: {self.allowed()}"

    def validate(self, value: Any, where: str = "parameter") -> Any:
        """Return ``value`` in its canonical form (float for float settings, tuple for lists)
        if allowed, else raise :class:`SettingError` naming ``where``, the key and the value."""
        def fail(why: str) -> SettingError:
            return SettingError(f"{where} '{self.name}' = {value!r}: {why}; allowed: {self.allowed()}")

        kind = self.kind
        if kind is bool:
            if not isinstance(value, bool):
                raise fail("not a boolean")
            return value
        if kind is str:
            if not isinstance(value, str):
                raise fail("not a string")
            if self.choices is not None and value not in self.choices:
                raise fail("not an allowed choice")
        elif kind in (int, float):
            value = self._number(value, kind, fail)
        elif kind is list:
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and type(value).__name__ != "array":
                raise fail("not a list")
            items = list(value)
            if self.length is not None and len(items) != self.length:
                raise fail(f"has {len(items)} values")
            if self.element_kind is str:
                if not all(isinstance(x, str) for x in items):
                    raise fail("not a list of strings")
                value = tuple(items)
            else:
                value = tuple(self._number(x, float, fail) for x in items)
        if self.check is not None:
            why = self.check(value)
            if why:
                raise fail(why)
        return value

    def _number(self, v: Any, kind: type, fail) -> float | int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
            raise fail(f"not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(v):
            raise fail("not finite")
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            raise fail("out of range")
        if self.high is not None and v > self.high:
            raise fail("out of range")
        return float(v) if kind is float else int(v)


def setting(default: Any, description: str, **kwargs: Any) -> Any:
    """A dataclass field declared with its :class:`Setting` (see the module docstring)."""
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata={"setting": (description, kwargs)})


def settings_of(cls: type) -> list[Setting]:
    """Every field of the dataclass ``cls`` declared with :func:`setting`, in field order."""
    out = []
    for f in fields(cls):
        meta = f.metadata.get("setting")
        if meta is None:
            continue
        description, kwargs = meta
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append(Setting(f.name, default, description, **kwargs))
    return out


def validate_fields(obj: Any) -> None:
    """For ``__post_init__`` of a frozen dataclass: validate every :func:`setting` field and
    store its canonical value; errors name the class and the field."""
    where = type(obj).__name__
    for s in settings_of(type(obj)):
        object.__setattr__(obj, s.name, s.validate(getattr(obj, s.name), f"{where}"))


def from_settings(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls(**values)`` keeping only the keys that are settings of ``cls`` (the rest, e.g.
    topic names of the node, stay with the caller); errors name ``where``."""
    names = {s.name for s in settings_of(cls)}
    try:
        return cls(**{k: v for k, v in values.items() if k in names})
    except SettingError as exc:
        raise SettingError(f"{where}: {exc}") from None


def markdown_table(specs: Sequence[Setting]) -> str:
    """The settings as a Markdown table (docs derive from the declarations)."""
    rows = ["| setting | default | unit | allowed | description |", "|---|---|---|---|---|"]
    for s in specs:
        d = list(s.default) if isinstance(s.default, tuple) else s.default
        rows.append(f"| `{s.name}` | `{d!r}` | {s.unit} | {s.allowed()} | {s.description} |")
    return "\n".join(rows)
