"""What the shield accepts as a joint vector and as a time. No ROS imports.

Only finite, real, one-dimensional vectors of exactly one value per joint pass: numeric
strings, bools, complex numbers (whose imaginary part ``float()`` would drop), object arrays
and nested lists are refused rather than coerced. Times must be finite and plausible for a
monotonic clock (``|t| <= MAX_TIME``): ``inf`` or ``1e308`` would keep inputs "fresh" forever.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: Inputs beyond this magnitude (rad, rad/s, N m) are not joint values at all.
MAX_ABS = 1e6
#: Largest time (s) accepted from a clock: about 317 years of uptime.
MAX_TIME = 1e10


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def joint_vector(values, n: int) -> np.ndarray | None:
    """``values`` as a float array of shape ``(n,)``, or None if it is not exactly that."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "fiu":
            return None
        arr = values.astype(float)
    elif isinstance(values, (list, tuple)) or type(values).__name__ == "array":
        if not all(_real(x) for x in values):
            return None
        arr = np.array(values, dtype=float)
    else:
        return None
    if arr.shape != (n,) or not (np.abs(arr) <= MAX_ABS).all():  # also refuses NaN
        return None
    return arr


def checked_time(t, what: str = "now") -> float:
    """``t`` as a float; raises ValueError for a non-real, non-finite or absurd time."""
    if not _real(t) or not math.isfinite(t) or abs(t) > MAX_TIME:
        raise ValueError(f"{what} must be a finite time within ±{MAX_TIME:g} s on a monotonic clock, got {t!r}")
    return float(t)


def implausible_state(q: np.ndarray, dq: np.ndarray, names, q_range: tuple[np.ndarray, np.ndarray],
                      v_max: np.ndarray) -> str | None:
    """Why ``(q, dq)`` cannot be the arm's state (outside ``q_range`` or faster than ``v_max``,
    per joint), or None."""
    lo, hi = q_range
    for i in np.flatnonzero((q < lo) | (q > hi) | (np.abs(dq) > v_max)):
        return (f"implausible joint state: {names[i]} at {q[i]:.4g} rad, {dq[i]:.4g} rad/s "
                f"(plausible: [{lo[i]:.4g}, {hi[i]:.4g}] rad, |dq| <= {v_max[i]:.4g} rad/s)")
    return None
