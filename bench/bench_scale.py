"""Evaluation throughput on Ray against the local process pool, in the same run.

Episodes/s of the shipped policy under the default randomization with 1 and 2 workers: local
(``simreal evaluate --workers N``: in-process for 1, a spawned ``ProcessPoolExecutor`` for 2)
and on Ray (``--ray``: N ``EpisodeWorker`` actors on a private 127.0.0.1 instance of 2 CPUs).
Start-up of the pool or of the actors is inside each measurement; Ray's own start (``ray.init``)
is timed separately. Run it in the venv (no network needed:
``unshare -n sh -c 'ip link set lo up && exec python bench/bench_scale.py'``).

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import time

from simreal_ros.scale import LOCAL, connect
from simreal_ros.scale.episodes import run_on_ray
from simreal_ros.training.evaluate import default_bundle, run_episodes

PROFILE, CONTROLLER, FIRST_SEED = "default", "policy", 20_000


def local_rate(n: int, workers: int) -> float:
    seeds = list(range(FIRST_SEED, FIRST_SEED + n))
    t0 = time.perf_counter()
    run_episodes(default_bundle(), PROFILE, CONTROLLER, seeds, workers)
    return n / (time.perf_counter() - t0)


def ray_rate(n: int, workers: int) -> float:
    requests = [(PROFILE, CONTROLLER, s) for s in range(FIRST_SEED, FIRST_SEED + n)]
    t0 = time.perf_counter()
    run_on_ray(LOCAL, default_bundle(), requests, workers=workers)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=24, help="episodes per measurement (%(default)s)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is kept (%(default)s)")
    args = p.parse_args()
    t0 = time.perf_counter()
    ray = connect(LOCAL, num_cpus=2)
    init_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {k: [] for k in ("local_1", "local_2", "ray_1", "ray_2")}
    for _ in range(args.repeats):  # interleaved, so machine noise is shared
        for w in (1, 2):
            rates[f"local_{w}"].append(local_rate(args.episodes, w))
            rates[f"ray_{w}"].append(ray_rate(args.episodes, w))
    best = {k: max(v) for k, v in rates.items()}
    ray.shutdown()
    for k, v in best.items():
        print(f"{k:8s} {v:6.2f} episodes/s")
    print(json.dumps({
        "episodes_per_measurement": args.episodes,
        **{f"{k}_episodes_per_s": round(v, 3) for k, v in best.items()},
        "ray_1_vs_local_1_ratio": round(best["ray_1"] / best["local_1"], 3),
        "ray_2_vs_local_2_ratio": round(best["ray_2"] / best["local_2"], 3),
        "ray_2_vs_ray_1_ratio": round(best["ray_2"] / best["ray_1"], 3),
        "local_2_vs_local_1_ratio": round(best["local_2"] / best["local_1"], 3),
        "ray_init_s": round(init_s, 2),
    }))


if __name__ == "__main__":
    main()
