"""What :func:`simreal_ros.bag.recover.recover` did, per file, for a person to read.

Per file: kept as it was, rebuilt, or left out; the messages kept per topic; each part that
did not read back (where, why, topic: count where the damaged chunk's index survived, the
log-time range); damage repaired without loss; where the original is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simreal_ros.bag.metadata import METADATA


@dataclass
class LostPart:
    """Data that did not read back: where, why, what it held where known."""

    reason: str
    offset: int
    end: int
    counts: dict[str, int] | None  # topic -> messages, None if unknown
    start_ns: int | None
    end_ns: int | None
    approximate: bool = False  # the time range is the gap between the good data around it

    def describe(self) -> str:
        what = ("messages: unknown" if self.counts is None else
                f"{sum(self.counts.values())} messages ({_by_topic(self.counts)})")
        if self.start_ns is None and self.end_ns is None:
            when = "log time unknown"
        else:
            t0 = "start" if self.start_ns is None else f"{self.start_ns / 1e9:.3f}"
            t1 = "end" if self.end_ns is None else f"{self.end_ns / 1e9:.3f}"
            when = f"log time between {t0} and {t1} s" if self.approximate else f"log time {t0} to {t1} s"
        where = f"bytes {self.offset}-{self.end}" if self.end > self.offset else f"byte {self.offset}"
        return f"{where} ({self.reason}): {what}, {when}"


@dataclass
class FileReport:
    name: str
    action: str  # "kept" (untouched), "rebuilt", "left out" (nothing readable: moved to original/)
    messages: dict[str, int] = field(default_factory=dict)  # topic -> messages kept
    lost: list[LostPart] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # repaired damage that lost no message
    borrowed: dict[str, str] = field(default_factory=dict)  # topic -> file its channel definition came from
    original: Path | None = None  # where the original is kept unchanged

    @property
    def message_count(self) -> int:
        return sum(self.messages.values())


@dataclass
class RecoveryReport:
    bag: Path
    files: list[FileReport] = field(default_factory=list)
    metadata: str = "unchanged"  # "unchanged", "written", "rewritten"
    metadata_problem: str | None = None
    metadata_original: Path | None = None
    topics: dict[str, int] = field(default_factory=dict)  # what rosbags read back

    @property
    def messages(self) -> int:
        return sum(f.message_count for f in self.files)

    @property
    def rebuilt(self) -> dict[str, int]:
        return {f.name: f.message_count for f in self.files if f.action == "rebuilt"}

    @property
    def unreadable(self) -> list[str]:
        return [f.name for f in self.files if f.action == "left out"]

    @property
    def changed(self) -> bool:
        return self.metadata != "unchanged" or any(f.action != "kept" for f in self.files)

    def summary(self) -> str:
        kept = [f for f in self.files if f.action != "left out"]
        lost = [p for f in self.files for p in f.lost]
        head = f"{self.bag}: {self.messages} messages in {len(kept)} file(s), read back with rosbags"
        if not self.changed:
            return head + "; nothing to do: every file is complete and verified, nothing changed"
        known = sum(sum(p.counts.values()) for p in lost if p.counts is not None)
        unknown = sum(p.counts is None for p in lost)
        head += "; nothing lost" if not lost else (
            f"; LOST {known} messages" + (f" and an unknown number in {unknown} damaged/torn part(s)" if unknown else ""))
        lines = [head]
        for f in self.files:
            if f.action == "kept":
                lines.append(f"  {f.name}: kept as it was ({f.message_count} messages, verified)")
                continue
            lines.append(f"  {f.name}: {f.action}: kept {f.message_count} messages"
                         + (f" ({_by_topic(f.messages)})" if f.messages else ""))
            lines += [f"    lost {p.describe()}" for p in f.lost]
            lines += [f"    repaired: {p}" for p in f.problems]
            lines += [f"    channel of {t} taken from {src}" for t, src in f.borrowed.items()]
            if f.original is not None:
                lines.append(f"    original kept unchanged: {f.original}")
        if self.metadata != "unchanged":
            why = f" (the old one: {self.metadata_problem})" if self.metadata_problem else ""
            lines.append(f"  {METADATA}: {self.metadata}{why}"
                         + (f"; old one kept: {self.metadata_original}" if self.metadata_original else ""))
        return "\n".join(lines)


def _by_topic(counts: dict[str, int]) -> str:
    return ", ".join(f"{t}: {n}" for t, n in sorted(counts.items()))
