"""Calibration rollouts on Ray: the fitter's batches of ``mujoco.sysid`` rollouts as Ray tasks.

Every Gauss-Newton step of :func:`simreal_ros.calibrate.fit` replays each chunk of the sessions
once per finite-difference perturbation of the parameters: independent rollouts of independent
models. :class:`RayRollouts` runs those batches as tasks (each with its own ``MjData``, one
thread) and returns the trajectories in order; MuJoCo's rollout is deterministic, so the fit
gives the same numbers as the local threads.
"""

from __future__ import annotations

import copy
import math
from typing import Any


def rollout_batch(models, control_signal, initial_states, rollout_signal_mapping, rollout_state_mapping,
                  ctrl_mapping) -> list:
    """One batch, as the toolbox rolls it out locally (``mujoco.sysid.sysid_rollout``)."""
    import mujoco
    from mujoco import sysid

    return list(sysid.sysid_rollout(models, [mujoco.MjData(models[0])], control_signal, initial_states,
                                    rollout_signal_mapping, rollout_state_mapping, ctrl_mapping))


class RayRollouts:
    """``batches(models, controls, initial_states, mappings...) -> trajectories`` on a Ray cluster."""

    def __init__(self, address: str) -> None:
        from simreal_ros.scale import cluster_cpus, connect

        self._ray = connect(address)
        self.workers = cluster_cpus(self._ray)
        self._task = self._ray.remote(num_cpus=1)(rollout_batch)

    def __call__(self, models, control_signal, initial_states, rollout_signal_mapping, rollout_state_mapping,
                 ctrl_mapping) -> list[Any]:
        n = len(models)
        size = max(1, math.ceil(n / (2 * self.workers)))  # two tasks per worker: even finishing times
        refs = [self._task.remote(models[s:s + size], control_signal[s:s + size], initial_states[s:s + size],
                                  rollout_signal_mapping, rollout_state_mapping, ctrl_mapping)
                for s in range(0, n, size)]
        # what ray.get returns is read-only (zero-copy from the object store); the fitter edits in place
        return copy.deepcopy([tr for batch in self._ray.get(refs) for tr in batch])
