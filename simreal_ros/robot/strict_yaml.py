"""YAML for description and safety config files: safe, numbers as written, every key once.

PyYAML's ``safe_load`` has two traps for limit files:

* a repeated mapping key silently keeps the *last* value, so a second ``panda_joint2:`` entry
  further down a file replaces the reviewed one without a trace;
* ``1e9`` (no dot, unsigned exponent) is a *string* under YAML 1.1, so a loader that calls
  ``float()`` on it accepts it while a type check would reject a plain number.

:class:`UniqueKeyLoader` refuses duplicate keys (naming the key, both lines and both values)
and resolves YAML 1.2 floats such as ``1e9`` as numbers. No tags beyond the safe ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping names the same key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and reads ``1e9`` as a float."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # '<<' merges: an explicit key may override a merged one
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base constructor reports it
                    continue
                if first is not None:
                    old = self.construct_object(first[1], deep=True)
                    new = self.construct_object(value_node, deep=True)
                    raise DuplicateKeyError(
                        None, None,
                        f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                        f"{first[0].start_mark.line + 1}; values {old!r} and {new!r}): a key may appear only once",
                        key_node.start_mark)
                seen[key] = (key_node, value_node)
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> Any:
    """Parse ``path`` with :class:`UniqueKeyLoader`.

    Raises:
        FileNotFoundError: no such file.
        yaml.YAMLError: malformed YAML or a duplicate key (:class:`DuplicateKeyError`).
    """
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error (its ``str`` spans several lines with a source excerpt)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        if isinstance(exc, DuplicateKeyError):
            return str(exc.problem)
        return f"{exc.context + ': ' if exc.context else ''}{exc.problem}{where}"
    return " ".join(str(exc).split())


def load_section(path: str | Path, key: str, what: str) -> dict:
    """The top-level mapping ``key`` of the YAML file ``path`` (strictly parsed); every
    problem is a RobotDescriptionError naming the file (``what`` names the file's role)."""
    from simreal_ros.robot.errors import RobotDescriptionError

    path = Path(path)
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise RobotDescriptionError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise RobotDescriptionError(f"{path}: malformed YAML: {yaml_error_text(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise RobotDescriptionError(f"{path}: needs a top-level '{key}' mapping")
    return data[key]
