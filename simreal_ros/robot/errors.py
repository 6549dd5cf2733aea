"""The robot description's error type and the one number check every limit and gain goes through."""

from __future__ import annotations

import math
from typing import Any


class RobotDescriptionError(ValueError):
    """A robot description file is missing or malformed; the message names file and element."""


def as_number(value: Any, where: str) -> float:
    """``value`` as a finite float; anything but a real number (a string such as ``"14"``, a bool,
    a list, ``None``, nan, inf) raises :class:`RobotDescriptionError` naming ``where``.

    YAML gives ``true`` and quoted numbers their own types: ``float()`` would turn them into
    limits (``true`` -> 1.0), so only ``int``/``float`` are numbers here.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RobotDescriptionError(f"{where}: not a number: {value!r} ({type(value).__name__}); "
                                    "write a plain number without quotes")
    v = float(value)
    if not math.isfinite(v):
        raise RobotDescriptionError(f"{where}: must be a finite number, got {v}")
    return v
