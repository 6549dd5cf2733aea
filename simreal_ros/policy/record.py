"""What the policy node computed each cycle, as one flat float64 record (ROS-free).

The node publishes every cycle (skipped ones too) as a ``std_msgs/Float64MultiArray`` on
``/simreal/policy/record`` whose ``layout.dim`` lists the fields in order (``label`` = field
name, ``size`` = its length, ``stride`` = its offset in ``data``); ``data`` is their
concatenation (:data:`FIELDS`):

- ``stamp``: the cycle's time (the node's clock, s); ``state_stamp``: the stamp of the joint
  state the cycle acted on (NaN before the first); ``object_stamp``: the tracked object pose's
  stamp (NaN when the bundle observes none or none came yet);
- ``skip``: 0 for a cycle that proposed a command, else ``1 + SKIP_REASONS.index(reason)``
  (:data:`simreal_ros.policy.executor.SKIP_REASONS`);
- ``observation``: the observation vector exactly as built (unnormalized, the manifest's term
  order; NaN when the cycle stopped before building it);
- ``raw_action``: the model's output; ``action``: it clipped to the manifest's ``action.clip``
  (what the command was made from; NaN when not computed).

The bundle's identity (name, content hash, terms, action semantics, this layout) is published
once, latched, as JSON on ``/simreal/policy/bundle`` (:func:`bundle_identity`). Filling a
record is a few slice copies into one preallocated buffer (:class:`RecordBuffer`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

FORMAT = "simreal_policy_record/1"
#: field name -> size as a function of (obs_dim, action_dim)
FIELDS: tuple[tuple[str, Any], ...] = (
    ("stamp", lambda o, a: 1), ("state_stamp", lambda o, a: 1), ("object_stamp", lambda o, a: 1),
    ("skip", lambda o, a: 1), ("observation", lambda o, a: o), ("raw_action", lambda o, a: a),
    ("action", lambda o, a: a),
)


def layout(obs_dim: int, action_dim: int) -> list[tuple[str, int, int]]:
    """(name, size, offset) of every field for a bundle's sizes."""
    out, offset = [], 0
    for name, size in FIELDS:
        n = int(size(obs_dim, action_dim))
        out.append((name, n, offset))
        offset += n
    return out


class RecordBuffer:
    """One preallocated record; :meth:`fill` overwrites it from a cycle's
    :class:`~simreal_ros.policy.executor.StepResult` (no allocation)."""

    def __init__(self, obs_dim: int, action_dim: int, skip_reasons: Sequence[str]) -> None:
        self.fields = layout(obs_dim, action_dim)
        self.size = sum(n for _, n, _ in self.fields)
        self.data = np.full(self.size, np.nan)
        s = {name: slice(off, off + n) for name, n, off in self.fields}
        self._obs, self._raw, self._act = s["observation"], s["raw_action"], s["action"]
        self._codes = {r: float(i + 1) for i, r in enumerate(skip_reasons)}

    def fill(self, res: Any, state_stamp: float | None, object_stamp: float | None) -> np.ndarray:
        d = self.data
        d[0] = res.now
        d[1] = math.nan if state_stamp is None else state_stamp
        d[2] = math.nan if object_stamp is None else object_stamp
        d[3] = 0.0 if res.skipped is None else self._codes.get(res.skipped, -1.0)
        for sl, v in ((self._obs, res.observation), (self._raw, res.raw_action), (self._act, res.action)):
            if v is None:
                d[sl] = math.nan
            else:
                d[sl] = v
        return d


def parse(data: Sequence[float], dims: Sequence[tuple[str, int, int]], where: str = "record") -> dict[str, np.ndarray]:
    """The fields of one record (``dims``: the message's (label, size, stride) triples).

    Raises:
        ValueError: the layout is not this format's (the message names what differs).
    """
    arr = np.asarray(data, dtype=float)
    names = [d[0] for d in dims]
    if names != [f for f, _ in FIELDS]:
        raise ValueError(f"{where}: record fields {names} are not {[f for f, _ in FIELDS]} ({FORMAT})")
    out: dict[str, np.ndarray] = {}
    for name, size, offset in dims:
        if offset + size > len(arr):
            raise ValueError(f"{where}: field '{name}' ({size} at {offset}) lies beyond the {len(arr)} values")
        out[name] = arr[offset:offset + size]
    return out


def bundle_identity(manifest: Any, directory: str, content_hash: str, robot_name: str,
                    skip_reasons: Sequence[str]) -> str:
    """The JSON the node publishes, latched, on the bundle topic."""
    return json.dumps({
        "format": FORMAT, "name": manifest.name, "sha256": content_hash, "directory": str(directory),
        "robot": robot_name, "joint_names": list(manifest.joint_names),
        "obs_terms": [[t, int(n)] for t, n in manifest.obs_terms], "action_type": manifest.action_type,
        "action_scale": float(manifest.action_scale), "action_clip": float(manifest.action_clip),
        "control_rate_hz": float(manifest.control_rate_hz),
        "record_fields": [[n, s, o] for n, s, o in layout(manifest.obs_dim, manifest.action_dim)],
        "skip_reasons": list(skip_reasons),
    }, sort_keys=True)
