"""What ``simreal loop`` writes at its end (:mod:`simreal_ros.loop.cycle` runs the steps): the
before-vs-after table (``DIR/loop.md``), the whole report (``DIR/loop.json``) and its figure
(``DIR/loop.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def row(label: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"": label, "success": a["success_rate"], "policy's own success": a["success_rate_policy_own"],
            "final error median (mm)": 1e3 * a["final_distance_median_m"],
            "interventions /100 commands": a["shield_interventions_per_100_commands"],
            "limit violations": a["limit_violations"], "episodes reverted": a["episodes_reverted"]}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])

    def fmt(k: str, v: Any) -> str:
        if isinstance(v, float) and "success" in k:
            return f"{100 * v:.0f} %"
        if isinstance(v, float):
            return f"{v:.1f}" if "mm" in k else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(k, r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = report["evaluation"]
    names = [k for k in ("parent", "new", "baseline") if k in ev]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [100 * ev[n]["success_rate"] for n in names], 0.4, label="success (evaluate's count)")
    ax.bar(x + 0.2, [100 * ev[n]["success_rate_policy_own"] for n in names], 0.4, label="the policy's own")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of episodes on the hidden table")
    ax.legend(fontsize=8)
    ax.set_title("success, before vs after")
    ax = axes[1]
    ax.boxplot([1e3 * np.asarray(ev[n]["final_distances_m"]) for n in names], tick_labels=names)
    ax.axhline(1e3 * report.get("success_radius_m", 0.03), color="g", ls="--", lw=1, label="success radius")
    ax.set_ylabel("final puck distance to goal (mm)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("final error")
    ax = axes[2]
    curve = (report.get("finetune") or {}).get("training_curve") or []
    if curve:
        ax.plot([c["timesteps"] for c in curve], [100 * c["success_last_50"] for c in curve])
    ax.set_xlabel("fine-tuning environment steps")
    ax.set_ylabel("training success, last 50 episodes (%)")
    ax.set_title("fine-tuning in the calibrated simulator")
    fig.suptitle(f"simreal loop: {report['real']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def before_after_rows(parent_name: str, new_name: str, stage: str, ev: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows: the parent (direct transfer), the new bundle and the scripted pusher on the hidden table."""
    return [row(f"before: {parent_name} (direct transfer)", ev["parent"]),
            row(f"after: {new_name} (stage {stage})", ev["new"]),
            row("scripted pusher (reference)", ev["baseline"])]


def write_report(report: dict[str, Any], rows: list[dict[str, Any]], out: Path, real_name: str, eval_episodes: int,
                 eval_seed: int, stage: str) -> None:
    """``out/loop.md``, ``out/loop.png`` and ``out/loop.json`` (``report["files"]`` names them)."""
    md = (f"# simreal loop on {real_name}\n\n{markdown_table(rows)}\n\n"
          f"Success as `simreal evaluate` counts it (an episode the shield reverted to the baseline counts by the "
          f"puck at its end); the policy's own success counts a reverted episode as a failure. "
          f"{eval_episodes} episodes per row on the hidden table, seeds {eval_seed}-"
          f"{eval_seed + eval_episodes - 1}, through the shield. Rollout stage reached: {stage}. "
          f"Frozen reference unchanged: {report['reference']['unchanged']}. Loop wall time "
          f"{report['wall_time_s']:.0f} s.\n")
    (out / "loop.md").write_text(md)
    report["files"] = {"markdown": str(out / "loop.md"), "json": str(out / "loop.json"),
                       "plot": str(plot(report, out / "loop.png"))}
    (out / "loop.json").write_text(json.dumps(report, indent=2, default=str))


def print_summary(rows: list[dict[str, Any]], out: Path) -> None:
    print("\n" + markdown_table(rows) + "\n")
    print(f"written: {out / 'loop.md'}, {out / 'loop.json'}, {out / 'loop.png'}")
