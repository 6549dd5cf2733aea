"""Training rollouts on Ray: a Stable-Baselines3 ``VecEnv`` whose environments live in Ray actors.

The ``n_envs`` environments are split into contiguous groups, one :class:`EnvGroup` actor per
group (default: one per cluster CPU); each actor steps its group with SB3's own ``DummyVecEnv``,
and :class:`RayVecEnv` concatenates the groups' observations, rewards, dones and infos in env
order. Seeds and reset options are handed to each group for its envs exactly as ``DummyVecEnv``
uses them, so a training run gives the same policy as ``DummyVecEnv``/``SubprocVecEnv`` locally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices


class EnvGroup:
    """One Ray actor: a ``DummyVecEnv`` over the environments ``env_fns`` build."""

    def __init__(self, env_fns: list[Callable]) -> None:
        from stable_baselines3.common.vec_env import DummyVecEnv

        self.venv = DummyVecEnv(env_fns)

    def spaces(self) -> tuple[Any, Any]:
        return self.venv.observation_space, self.venv.action_space

    def reset(self, seeds: list, options: list) -> tuple[Any, list[dict]]:
        self.venv._seeds, self.venv._options = list(seeds), list(options)
        obs = self.venv.reset()
        return obs, list(self.venv.reset_infos)

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, list[dict], list[dict]]:
        obs, rews, dones, infos = self.venv.step(actions)
        return obs, rews, dones, infos, list(self.venv.reset_infos)

    def call(self, what: str, *args, **kwargs) -> Any:
        """``get_attr``/``set_attr``/``env_method``/``env_is_wrapped`` of the group's DummyVecEnv."""
        if what not in ("get_attr", "set_attr", "env_method", "env_is_wrapped"):
            raise ValueError(f"EnvGroup.call: {what!r} is not a VecEnv query")
        return getattr(self.venv, what)(*args, **kwargs)

    def close(self) -> None:
        self.venv.close()


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


class RayVecEnv(VecEnv):
    """``VecEnv`` over Ray actors; connect Ray first (:func:`simreal_ros.scale.connect`).

    Args:
        env_fns: environment factories (picklable: they travel to the actors).
        groups: number of actors (default: the cluster's CPUs, at most one per environment).
    """

    def __init__(self, env_fns: list[Callable], groups: int | None = None) -> None:
        import ray

        from simreal_ros.scale import cluster_cpus

        if not env_fns:
            raise ValueError("RayVecEnv needs at least one environment")
        self._ray = ray
        n = max(1, min(len(env_fns), groups or cluster_cpus(ray)))
        bounds = np.linspace(0, len(env_fns), n + 1).round().astype(int)
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        actor = ray.remote(num_cpus=1)(EnvGroup)
        self._groups = [actor.remote(env_fns[s]) for s in self._slices]
        obs_space, act_space = ray.get(self._groups[0].spaces.remote())
        self._pending: list | None = None
        super().__init__(len(env_fns), obs_space, act_space)

    # ---------------------------------------------------------------- stepping
    def reset(self):
        refs = [g.reset.remote(self._seeds[s], self._options[s]) for g, s in zip(self._groups, self._slices)]
        out = self._ray.get(refs)
        for (_, infos), s in zip(out, self._slices):
            self.reset_infos[s] = infos
        self._reset_seeds()
        self._reset_options()
        return _concat([o for o, _ in out])

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [g.step.remote(actions[s]) for g, s in zip(self._groups, self._slices)]

    def step_wait(self):
        out = self._ray.get(self._pending)
        self._pending = None
        infos: list[dict] = []
        for part, s in zip(out, self._slices):
            infos += part[3]
            self.reset_infos[s] = part[4]
        return (_concat([p[0] for p in out]), np.concatenate([p[1] for p in out]),
                np.concatenate([p[2] for p in out]), infos)

    def close(self) -> None:
        if self._groups:
            self._ray.get([g.close.remote() for g in self._groups])
            for g in self._groups:
                self._ray.kill(g)
            self._groups = []

    # ---------------------------------------------------------------- queries
    def _by_group(self, indices: VecEnvIndices) -> list[tuple[int, list[int]]]:
        """(group, local indices) for the global ``indices``, in group order."""
        wanted = set(self._get_indices(indices))
        out = []
        for gi, s in enumerate(self._slices):
            local = [i - s.start for i in range(s.start, s.stop) if i in wanted]
            if local:
                out.append((gi, local))
        return out

    def _call(self, what: str, indices: VecEnvIndices, *args, **kwargs) -> list[Any]:
        parts = self._by_group(indices)
        refs = [self._groups[gi].call.remote(what, *args, indices=local, **kwargs) for gi, local in parts]
        return [x for res in self._ray.get(refs) for x in (res or [])]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list:
        return self._call("env_method", indices, method_name, *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return self._call("env_is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render")
