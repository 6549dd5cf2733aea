"""The staged fit: ``mujoco.sysid.optimize`` run stage by stage, each from where the last stopped.

A fit of every parameter at once (117 of them, 70 the link inertias') from the prior is slow
and does not converge: every Gauss-Newton step replays each chunk once per free parameter,
and far from the optimum the inertias soak up what friction, bias and latency get wrong. So
(:func:`plan`):

1. ``dynamics``: everything but the link inertias (friction, damping, armature, gains,
   payload, latency, bias), inertias at the prior, on a share of the fitted chunks
   (``FitConfig.short_share``, spread evenly over the session);
2. ``inertia``: every parameter, from stage 1, on the same share;
3. ``all``: every parameter on every fitted chunk, from stage 2; its Jacobian at the optimum
   gives the intervals.

A stage stops when a hardly regularised Gauss-Newton step (``mu`` at most
``FitConfig.converged_mu``) reduced the objective by less than ``FitConfig.ftol`` of it
(``stage_ftol`` for the first stages; converged), at the optimizer's own tolerances, or after
its ``max_iters`` (not converged: the fit says so). Each stage's rollouts, iterations, objective and wall time are reported.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from mujoco import sysid

from simreal_ros.calibrate.params import kind_of

if TYPE_CHECKING:
    from simreal_ros.calibrate.fit import FitConfig
    from simreal_ros.calibrate.replay import Chunk, Replay


@dataclass(frozen=True)
class Stage:
    """One stage: the kinds free in it (within ``FitConfig.parameters``), the share of the
    fitted chunks it replays and its iterations at most."""

    name: str
    kinds: tuple[str, ...]
    share: float
    max_iters: int


@dataclass
class StageResult:
    name: str
    free_parameters: int
    chunks: int
    replayed_s: float
    iterations: int
    rollouts: int
    rollout_steps: int
    wall_time_s: float
    objective_start: float
    objective_end: float
    converged: bool
    stop: str
    start_latency_s: float | None = None  # the scan's pick (None: latency not free or no scan)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan(cfg: FitConfig) -> list[Stage]:
    """The stages for ``cfg`` (see the module docstring); a stage with nothing new to free is left out."""
    wanted = tuple(cfg.parameters)
    no_inertia = tuple(k for k in wanted if k != "inertia")
    stages = []
    if "inertia" in wanted and no_inertia:
        stages.append(Stage("dynamics", no_inertia, cfg.short_share, cfg.stage1_iters))
        stages.append(Stage("inertia", wanted, cfg.short_share, cfg.stage2_iters))
    elif cfg.short_share < 1.0:
        stages.append(Stage("dynamics", wanted, cfg.short_share, cfg.stage1_iters))
    stages.append(Stage("all", wanted, 1.0, cfg.max_iters))
    return stages


def spread(chunks: list[Chunk], share: float) -> list[Chunk]:
    """About ``share`` of ``chunks``, evenly spread over them (at least one per session)."""
    if share >= 1.0 or len(chunks) <= 1:
        return list(chunks)
    n = max(1, int(round(share * len(chunks))))
    pick = set(np.unique(np.round(np.linspace(0, len(chunks) - 1, n)).astype(int)).tolist())
    for s in {c.session for c in chunks}:  # every session in it
        if not any(chunks[i].session == s for i in pick):
            pick.add(next(i for i, c in enumerate(chunks) if c.session == s))
    return [chunks[i] for i in sorted(pick)]


def _scan_latency(params: sysid.ParameterDict, fn, n: int) -> float | None:
    """Start the stage from the best of ``n`` action latencies across their bounds, the rest as
    they are: the objective is not convex in the latency (a wrong one is partly made up by more
    damping: a local minimum), and a latency costs one rollout per chunk to try."""
    p = params["action_latency"] if "action_latency" in params.keys() else None
    if p is None or p.frozen:
        return None
    x0 = params.as_vector()
    names = [k for k, q in params.items() if not q.frozen]
    off = 0
    for k in names:
        if k == "action_latency":
            break
        off += params[k].size
    grid = np.linspace(float(p.min_value[0]), float(p.max_value[0]), n)
    xs = np.repeat(x0[:, None], n + 1, axis=1)
    xs[off, 1:] = grid
    res = fn(xs, params)[0]
    obj = 0.5 * sum(np.sum(np.asarray(r) ** 2, axis=0) for r in res)
    best = int(np.argmin(obj))
    params.update_from_vector(xs[:, best])
    return float(xs[off, best])


class _Converged(Exception):
    """Raised by the iteration callback to end a stage (the optimizer has no objective tolerance)."""

    def __init__(self, x: np.ndarray, jac: np.ndarray | None, objective: float) -> None:
        super().__init__("converged")
        self.x, self.jac, self.objective = x, jac, objective


@dataclass
class Outcome:
    """The last stage's optimum: the parameters, the Jacobian there (for the intervals)."""

    params: sysid.ParameterDict
    x: np.ndarray
    jac: np.ndarray | None
    stages: list[StageResult]
    converged: bool


def run(replay: Replay, params: sysid.ParameterDict, chunks: list[Chunk], frozen: set[str],
        prior: Callable[[sysid.ParameterDict], tuple[np.ndarray, np.ndarray, np.ndarray]], cfg: FitConfig,
        on_iter: Callable[[str, int, float], None] | None = None) -> Outcome:
    """Run :func:`plan`'s stages on ``params`` (in place). ``frozen``: names that stay at the
    prior throughout (not asked for, or not identifiable); ``prior(params)``: the weak prior
    ``(index, x0, weight)`` on the free vector of ``params`` as it is frozen at that stage."""
    results: list[StageResult] = []
    jac = None
    converged = False
    stages = plan(cfg)
    for k, stage in enumerate(stages):
        for name, p in params.items():
            p.frozen = name in frozen or kind_of(name) not in stage.kinds
        x0 = params.as_vector()
        if x0.size == 0:
            continue
        use = spread(chunks, stage.share)
        seqs = replay.sequences(use, f"{stage.name}_")
        fn = replay.residual_fn(seqs, prior(params))
        last = k == len(stages) - 1
        ftol = cfg.ftol if last else cfg.stage_ftol
        r_start = replay.rollouts
        steps_start = replay.rollout_steps
        t0 = time.perf_counter()
        objectives: list[float] = []
        count = {"logs": 0}

        def callback(trace, stage=stage, objectives=objectives, count=count, ftol=ftol):
            count["logs"] = len(trace)
            for i in range(len(trace) - 1):  # keep only the last Jacobian (each one is large)
                if trace[i].jacobian is not None:
                    trace[i] = dataclasses.replace(trace[i], jacobian=None, residual=None)
            log = trace[-1]
            objectives.append(float(log.objective))
            if on_iter is not None:
                on_iter(stage.name, len(trace), float(log.objective))
            step = getattr(log, "step", None)
            red = float(log.reduction)
            # a full Gauss-Newton step (hardly regularised) that no longer reduces the objective;
            # a damped step after rejected ones is small without the fit being done
            if (step is not None and log.objective > 0 and 0.0 <= red < ftol * float(log.objective)
                    and float(log.regularizer) <= cfg.converged_mu):
                # converged: take the step (the objective at x + step is objective - reduction)
                x = np.asarray(log.candidate, float).ravel() + np.asarray(step, float).ravel()
                raise _Converged(x, log.jacobian, float(log.objective) - red)

        scanned = _scan_latency(params, fn, cfg.latency_scan) if cfg.latency_scan > 1 else None
        log_out = io.StringIO()
        stop = ""
        try:
            opt, res = sysid.optimize(params, fn, optimizer="mujoco", verbose=False, max_iters=stage.max_iters,
                                      x_scale="jac", eps=cfg.fd_step, iter_callback=callback, output=log_out)
            x, jac = np.asarray(res.x, float), res.jac
            text = log_out.getvalue()
            stop = next((line.split(":", 1)[1].split(" y:")[0].strip() for line in text.splitlines()
                         if line.startswith("Terminated")), "")
            ok = "maximum iterations" not in text
            iterations = max(0, count["logs"] - 1)  # the last log is the end point's
        except _Converged as c:
            iterations = count["logs"]
            x, jac = np.clip(c.x, *params.get_bounds()), c.jac
            stop, ok = f"objective reduction < {ftol:g} of it", True
            objectives.append(c.objective)
        params.update_from_vector(x)
        results.append(StageResult(stage.name, int(x0.size), len(use), float(sum(c.duration for c in use)),
                                   iterations, replay.rollouts - r_start, replay.rollout_steps - steps_start,
                                   time.perf_counter() - t0, objectives[0] if objectives else float("nan"),
                                   objectives[-1] if objectives else float("nan"), ok, stop, scanned))
        if last:
            converged = ok
    for name, p in params.items():
        p.frozen = name in frozen
    return Outcome(params, params.as_vector(), jac, results, converged)
