"""Figures of an evaluation: distance-to-goal traces (PNG) and a rendered episode (GIF)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"policy": "tab:blue", "baseline": "tab:orange"}


def plot_runs(traces: dict[str, dict[str, list[list[float]]]], report: dict[str, Any], path: str | Path,
              control_period: float, success_radius: float = 0.02,
              ylabel: str = "flange distance to goal (m)") -> Path:
    """One panel per condition: every episode's distance to the goal over time (thin lines;
    NaN after an episode ended), the median over the episodes still running (thick), the
    success radius (dashed); log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(traces)
    fig, axes = plt.subplots(1, len(conds), figsize=(6 * len(conds), 4.2), sharey=True, squeeze=False)
    for ax, cname in zip(axes[0], conds):
        for ctl, runs in traces[cname].items():
            arr = np.array(runs)
            t = np.arange(1, arr.shape[1] + 1) * control_period
            for r in arr:
                ax.plot(t, r, color=COLORS.get(ctl, "gray"), alpha=0.12, lw=0.7)
            agg = report["conditions"][cname][ctl]
            with np.errstate(all="ignore"):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: every episode had ended
                    med = np.nanmedian(arr, axis=0)
            ax.plot(t, med, color=COLORS.get(ctl, "gray"), lw=2.2,
                    label=f"{ctl}: {agg['success_rate']:.0%} success, "
                          f"{agg['shield_interventions_per_episode']:.1f} interventions/ep")
        ax.axhline(success_radius, color="k", ls="--", lw=1, label=f"success radius {success_radius * 100:g} cm")
        ax.set_yscale("log")
        ax.set_xlabel("time (s)")
        ax.set_title(f"{cname} ({report['conditions'][cname]['randomization']}), {report['episodes']} episodes")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(f"policy '{report['policy']}' vs baseline controller (through the safety shield)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_episode(bundle: str | Path, profile: str, seed: int, path: str | Path, fps: float = 20) -> Path | None:
    """Render one policy episode to a GIF; ``None`` (with a message) when offscreen GL is unavailable."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import imageio.v2 as imageio

        from simreal_ros.training.evaluate import _run_chunk

        res = _run_chunk({"bundle": str(bundle), "profile": profile, "controller": "policy", "seeds": [seed],
                          "no_shield": False, "render": True})[0]
        frames = [np.asarray(f) for f in res["frames"] if f is not None]
        if not frames:
            raise RuntimeError("no frames rendered")
        step = 2 if fps > 10 else 1  # real time at <= 10 frames per second
        imageio.mimsave(path, frames[::step], duration=step / fps, loop=0)
        return Path(path)
    except Exception as exc:  # noqa: BLE001 - rendering is optional: report and carry on
        print(f"animation skipped: offscreen rendering unavailable ({type(exc).__name__}: {exc}); "
              "set MUJOCO_GL=egl or osmesa")
        return None
