"""Tables and plots of a comparison, made from its result files alone (``runs/**/eval.json``).

``write_report(DIR)`` reads every finished cell and writes ``results.csv`` (one row per run),
``summary.md`` (per task and optimizer: mean and 95% t-interval over seeds; the paired difference
DoPr-X - X over seeds with its interval) and three plots: validation loss against success rate (one
point per run), state deviation from the expert against t, and validation-loss learning curves.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dopr_robot.atomic import atomic_path, write_text_atomic

# Two-sided 95% Student t quantiles t_{0.975, df}, df = 1..30; beyond 30 the normal 1.96 is close.
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]

# (column, heading, higher is better) for the summary tables.
METRICS = [
    ("success_rate", "success rate", True),
    ("mean_return", "return", True),
    ("val_loss", "validation loss", False),
    ("j_traj", "J_traj", False),
    ("ttf_ratio", "on-policy / on-expert action error", False),
]
COLUMNS = ["task", "optimizer", "seed", "val_loss", "best_val_loss", "success_rate", "success_ci_low",
           "success_ci_high", "mean_return", "j_traj", "action_error_on_policy", "action_error_on_expert",
           "ttf_ratio", "eval_episodes", "eval_seed", "train_steps", "wall_time_s"]


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the mean; (mean, nan, nan) for fewer than 2 values."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if len(data) < 2:
        return mean, math.nan, math.nan
    t = T975[len(data) - 2] if len(data) - 1 <= len(T975) else 1.96
    half = t * float(data.std(ddof=1)) / math.sqrt(len(data))
    return mean, mean - half, mean + half


def load_rows(out: str | Path) -> list[dict[str, Any]]:
    """One row per finished run, from ``runs/<task>/<optimizer>/seed<k>/eval.json``, sorted."""
    rows = []
    for path in sorted(Path(out).glob("runs/*/*/seed*/eval.json")):
        result = json.loads(path.read_text())
        cell, closed, comp, val = result["cell"], result["closed_loop"], result.get("compounding"), result.get("validation") or {}
        rows.append({
            "task": cell["task"], "optimizer": cell["optimizer"], "seed": cell["seed"],
            "val_loss": val.get("val_loss"), "best_val_loss": val.get("best_val_loss"),
            "success_rate": closed["success_rate"], "success_ci_low": closed["success_ci"][0],
            "success_ci_high": closed["success_ci"][1], "mean_return": closed["mean_return"],
            "j_traj": comp["j_traj"]["mean"] if comp else None,
            "action_error_on_policy": comp["action_error_on_policy"]["mean"] if comp else None,
            "action_error_on_expert": comp["action_error_on_expert"]["mean"] if comp else None,
            "ttf_ratio": comp["action_error_ratio"]["value"] if comp else None,
            "eval_episodes": result["episodes"], "eval_seed": result["seed"],
            "train_steps": (result.get("checkpoint") or {}).get("step"), "wall_time_s": cell["wall_time_s"],
            "deviation": comp["state_deviation"]["mean"] if comp else None,
            "run_dir": str(path.parent),
        })
    rows.sort(key=lambda r: (r["task"], r["optimizer"], r["seed"]))
    return rows


def write_report(out: str | Path) -> list[dict[str, Any]]:
    """Write results.csv, summary.md and the plots for the comparison in ``out``; return the rows."""
    out = Path(out)
    rows = load_rows(out)
    if not rows:
        raise FileNotFoundError(f"no finished runs under {out}/runs")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "results.csv", buffer.getvalue())
    settings = json.loads((out / "compare_config.json").read_text()) if (out / "compare_config.json").exists() else {}
    write_text_atomic(out / "summary.md", summary_markdown(rows, settings))
    plot_validation_vs_success(rows, out / "val_loss_vs_success.png")
    plot_deviation(rows, out / "deviation_from_expert.png")
    plot_learning_curves(rows, out / "learning_curves.png")
    return rows


def summary_markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Per task: a table of optimizers (mean [95% CI] over seeds) and the paired DoPr-X - X differences."""
    lines = ["# Comparison summary", ""]
    if settings:
        lines += [f"Settings: policy `{settings.get('policy')}` (history {settings.get('history')}, chunk "
                  f"{settings.get('chunk')}), {settings.get('steps')} steps, batch {settings.get('batch_size')}, "
                  f"lr {settings.get('lr')}, weight decay {settings.get('weight_decay')}, DoPr damping "
                  f"{settings.get('damping')}; {settings.get('demo_episodes')} demonstration episodes per task; "
                  f"{settings.get('eval_episodes')} evaluation episodes per run (reset seeds from "
                  f"{settings.get('eval_seed')}).", ""]
    lines += ["Each cell: mean over training seeds [95% t-interval]. Validation loss is on held-out expert "
              "episodes; success, return, J_traj and the action-error ratio are closed-loop.", ""]
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        optimizers = list(dict.fromkeys(r["optimizer"] for r in task_rows))
        lines += [f"## {task}", "", "| optimizer | seeds | " + " | ".join(h for _, h, _ in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for optimizer in optimizers:
            runs = [r for r in task_rows if r["optimizer"] == optimizer]
            cells = [_format_interval(*t_interval([r[m] for r in runs])) for m, _, _ in METRICS]
            lines.append(f"| {optimizer} | {len(runs)} | " + " | ".join(cells) + " |")
        pairs = [(o[5:], o) for o in optimizers if o.startswith("dopr-") and o[5:] in optimizers]
        if pairs:
            lines += ["", "Paired difference DoPr-X - X over seeds (same demonstrations, same initial weights, same "
                      "evaluation seeds):", "", "| pair | seeds | episodes/run | " + " | ".join(h for _, h, _ in METRICS) + " |",
                      "|---|---|---|" + "---|" * len(METRICS)]
            for base, dopr in pairs:
                by_seed = {r["seed"]: r for r in task_rows if r["optimizer"] == base}
                paired = [(by_seed[r["seed"]], r) for r in task_rows if r["optimizer"] == dopr and r["seed"] in by_seed]
                cells = [_format_interval(*t_interval([_difference(d[m], b[m]) for b, d in paired]), signed=True)
                         for m, _, _ in METRICS]
                episodes = sorted({r["eval_episodes"] for pair in paired for r in pair})
                lines.append(f"| {dopr} - {base} | {len(paired)} | {'/'.join(map(str, episodes))} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _format_interval(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "n/a"
    fmt = (lambda v: f"{v:+.3g}") if signed else (lambda v: f"{v:.3g}")
    return fmt(mean) if not math.isfinite(low) else f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def _per_task_axes(rows: list[dict[str, Any]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    fig.suptitle(title)
    return fig, dict(zip(tasks, axes[0]))


def _colors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
    return {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(optimizers)}


def plot_validation_vs_success(rows: list[dict[str, Any]], path: Path) -> None:
    """One point per run: does lower validation loss mean higher closed-loop success?"""
    fig, axes = _per_task_axes(rows, "validation loss vs closed-loop success (one point per run)")
    colors = _colors(rows)
    for task, ax in axes.items():
        for optimizer, color in colors.items():
            runs = [r for r in rows if r["task"] == task and r["optimizer"] == optimizer and r["val_loss"] is not None]
            ax.scatter([r["val_loss"] for r in runs], [r["success_rate"] for r in runs], color=color, label=optimizer)
        ax.set(title=task, xlabel="validation loss (held-out episodes)", ylabel="success rate", ylim=(-0.05, 1.05))
        ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_deviation(rows: list[dict[str, Any]], path: Path) -> None:
    """Mean over runs of each run's mean state deviation from the expert, against t."""
    fig, axes = _per_task_axes(rows, "state deviation from the expert (same initial state), mean over runs")
    colors = _colors(rows)
    for task, ax in axes.items():
        for optimizer, color in colors.items():
            curves = [np.asarray(r["deviation"]) for r in rows
                      if r["task"] == task and r["optimizer"] == optimizer and r["deviation"] is not None]
            if curves:
                length = min(len(c) for c in curves)
                ax.plot(np.mean([c[:length] for c in curves], axis=0), color=color, label=optimizer)
        ax.set(title=task, xlabel="t (env steps)", ylabel="||s_policy - s_expert|| (normalized)")
        ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_learning_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Validation loss against training step, mean over seeds per optimizer (from metrics.jsonl)."""
    fig, axes = _per_task_axes(rows, "validation loss during training (EMA weights), mean over seeds")
    colors = _colors(rows)
    for task, ax in axes.items():
        for optimizer, color in colors.items():
            curves = [_val_curve(Path(r["run_dir"]) / "metrics.jsonl") for r in rows
                      if r["task"] == task and r["optimizer"] == optimizer]
            curves = [c for c in curves if c]
            if curves:
                steps = sorted(set.intersection(*(set(c) for c in curves)))
                ax.plot(steps, [np.mean([c[s] for c in curves]) for s in steps], color=color, label=optimizer)
        ax.set(title=task, xlabel="training step", ylabel="validation loss", yscale="log")
        ax.legend(fontsize=8)
    _save_figure(fig, path)


def _val_curve(metrics: Path) -> dict[int, float]:
    if not metrics.exists():
        return {}
    entries = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {e["step"]: e["val_loss"] for e in entries if "val_loss" in e}


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
