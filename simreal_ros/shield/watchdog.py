"""Freshness of commands and joint state on the shield's monotonic clock."""

from __future__ import annotations

import math


class Freshness:
    """Time of the last accepted input of one kind; fresh while younger than ``timeout``.

    A clock that goes backwards (``now`` before the last input) or jumps forward makes the
    input stale, which is the safe side; the age is never negative or NaN.
    """

    def __init__(self, timeout: float, what: str) -> None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"{what} timeout must be finite and > 0, got {timeout}")
        self.timeout = float(timeout)
        self.what = what
        self.last: float | None = None

    def touch(self, now: float) -> None:
        self.last = now

    def age(self, now: float) -> float:
        if self.last is None:
            return math.inf
        age = now - self.last
        return age if age >= 0.0 else math.inf

    def fresh(self, now: float) -> bool:
        return self.age(now) <= self.timeout

    def clear(self) -> None:
        self.last = None
