"""Reading a bundle manifest as bounded YAML: hostile input costs little and fails clearly.

A manifest is a few kilobytes of plain data (the shipped one is ~6 KB, ~250 nodes). Bundles
come from training machines, colleagues and downloads, so the reader bounds what one may cost
*before* and *while* parsing:

- the file's size in bytes (:data:`MAX_BYTES`), checked before a byte is parsed, reading at
  most one byte more than allowed (a huge or endless file is not read in);
- no YAML anchors or aliases: one alias bomb of a few hundred bytes expanded to 522 MB when
  printed. A manifest written by :func:`simreal_ros.policy.bundle.save_bundle` has none;
- nesting depth (:data:`MAX_DEPTH`), number of nodes (:data:`MAX_NODES`) and the length of
  any one scalar (:data:`MAX_SCALAR`);
- no duplicate keys in a mapping (YAML keeps the last silently: two ``action`` sections would
  run the second one unseen);
- only the safe YAML types (``yaml.SafeLoader``: no Python tags, no code).

Every refusal is a :class:`ManifestYamlError` (a ``ValueError``) naming the file and the line.
No ROS imports.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

#: largest manifest accepted (bytes); the shipped manifest is ~6 KB
MAX_BYTES = 256 * 1024
#: deepest nesting of mappings/lists accepted
MAX_DEPTH = 24
#: most YAML nodes (mappings, lists, scalars) accepted
MAX_NODES = 20_000
#: longest scalar (characters) accepted
MAX_SCALAR = 4096


class ManifestYamlError(ValueError):
    """The manifest file is too large, not YAML, or uses YAML features a manifest may not use."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else "?"


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors/aliases and duplicate keys and bounds depth,
    node count and scalar length while composing (before anything is constructed)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401 - PyYAML hook
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ManifestYamlError(f"{_where(event.start_mark)}: YAML alias '*{event.anchor}' is not allowed in a "
                                    "manifest (anchors and aliases can expand a small file into gigabytes)")
        if getattr(event, "anchor", None) is not None:
            raise ManifestYamlError(f"{_where(event.start_mark)}: YAML anchor '&{event.anchor}' is not allowed in a "
                                    "manifest (write the values out)")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise ManifestYamlError(f"{_where(event.start_mark)}: more than {MAX_NODES} YAML nodes; a manifest is "
                                    "a few hundred")
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR:
            raise ManifestYamlError(f"{_where(event.start_mark)}: a value of {len(event.value)} characters; at most "
                                    f"{MAX_SCALAR} are allowed")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ManifestYamlError(f"{_where(event.start_mark)}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key (a list or mapping): SafeLoader refuses it below
                continue
            if duplicate:
                raise ManifestYamlError(f"{_where(key_node.start_mark)}: key {str(key)[:80]!r} appears twice in one "
                                        "mapping (YAML would silently keep the last)")
        return super().construct_mapping(node, deep=deep)


def read_bounded(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's bytes; refuses (without reading it all in) a file larger than ``max_bytes``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ManifestYamlError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise ManifestYamlError(f"{path}: larger than {max_bytes} bytes; a manifest is a few kilobytes")
    return data


def load_manifest_yaml(path: str | Path, max_bytes: int = MAX_BYTES) -> Any:
    """Parse ``path`` with :class:`BoundedSafeLoader`; errors name the file (and line)."""
    data = read_bounded(path, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestYamlError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except ManifestYamlError as exc:
        raise ManifestYamlError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ManifestYamlError(f"{path}: not valid YAML: {_short(' '.join(str(exc).split()), 400)}") from exc
    except RecursionError as exc:  # pragma: no cover - MAX_DEPTH stops nesting long before
        raise ManifestYamlError(f"{path}: nested too deeply") from exc


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def short_repr(value: Any, n: int = 80) -> str:
    """``repr(value)`` cut to ``n`` characters: error messages and reports never print a
    manifest value unbounded (:mod:`reprlib` never builds the full repr of a big container)."""
    return _short(_REPR.repr(value), n)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 8, 8, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 40, 40
