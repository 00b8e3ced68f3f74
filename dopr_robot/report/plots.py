"""The report's figures, each complete on its own: title, axis units, intervals, and a caption
saying how many seeds, episodes per run and which evaluation seeds it shows.

One panel per task; each optimizer keeps one colour for its base and its DoPr variant (solid line /
circles for the base, dashed line / triangles for DoPr), listed base beside variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dopr_robot.atomic import atomic_path
from dopr_robot.report.results import deviation_curve, optimizer_order, validation_curve
from dopr_robot.report.statistics import run_band

BAND = "band: 95% percentile bootstrap over runs (B=2000)"


def plot_validation_vs_success(rows: list[dict[str, Any]], path: str | Path) -> None:
    """One point per run, validation loss against closed-loop success with the run's Wilson 95% bars:
    does a lower validation loss mean a higher success rate?"""
    fig, axes = _figure(rows, "Validation loss vs closed-loop success rate (one point per run)")
    for task, ax in axes.items():
        for optimizer, style in _styles(rows).items():
            runs = [r for r in rows if r["task"] == task and r["optimizer"] == optimizer and r["val_loss"] is not None]
            if not runs:
                continue
            success = np.array([r["success_rate"] for r in runs])
            bars = np.array([[s - r["success_ci_low"], r["success_ci_high"] - s] for s, r in zip(success, runs)]).T
            bars = np.clip(bars, 0.0, None)  # a Wilson bound at 0/N or N/N can sit 1e-17 past the rate
            ax.errorbar([r["val_loss"] for r in runs], success, yerr=bars, fmt=style["marker"], color=style["color"],
                        capsize=3, label=optimizer)
        ax.set(title=task, xlabel="validation loss (MSE per action dim, normalized actions)",
               ylabel="success rate (fraction of episodes)", ylim=(-0.05, 1.05))
        _legend(ax)
    _caption(fig, rows, "error bars: Wilson 95% interval over each run's evaluation episodes")
    _save(fig, path)


def plot_deviation(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Per optimizer, the mean over runs of each run's mean state deviation from the expert (rolled out
    from the same initial state) against t, with a 95% band across runs."""
    fig, axes = _figure(rows, "State deviation from the expert, same initial state (mean over runs)")
    for task, ax in axes.items():
        task_rows = [r for r in rows if r["task"] == task]
        for optimizer, style in _styles(rows).items():
            curves = [c for c in (deviation_curve(r) for r in task_rows if r["optimizer"] == optimizer) if c is not None]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean, low, high = run_band(np.stack([c[:length] for c in curves]))
            ax.plot(mean, color=style["color"], linestyle=style["line"], label=f"{optimizer} ({len(curves)} runs)")
            ax.fill_between(np.arange(length), low, high, color=style["color"], alpha=0.15, linewidth=0)
        thresholds = {r["divergence_threshold"] for r in task_rows if r["divergence_threshold"] is not None}
        if len(thresholds) == 1:
            ax.axhline(thresholds.pop(), color="grey", linestyle=":", linewidth=1, label="divergence threshold")
        ax.set(title=task, xlabel="t (environment steps)", ylabel="||s_policy - s_expert|| (normalized state units)")
        ax.set_ylim(bottom=0)
        _legend(ax)
    _caption(fig, rows, f"curve: mean over runs of each run's mean over episodes still running at t; {BAND}")
    _save(fig, path)


def plot_learning_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Validation loss against training step per optimizer (from each run's metrics.jsonl), the mean
    over seeds with a 95% band across runs, at the steps every run logged."""
    fig, axes = _figure(rows, "Validation loss during training (EMA weights, held-out episodes)")
    for task, ax in axes.items():
        logged = False
        for optimizer, style in _styles(rows).items():
            curves = [c for c in (validation_curve(r) for r in rows if r["task"] == task and r["optimizer"] == optimizer) if c]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            if not steps:
                continue
            mean, low, high = run_band(np.array([[c[s] for s in steps] for c in curves]))
            ax.plot(steps, mean, color=style["color"], linestyle=style["line"], marker=style["marker"], markersize=3,
                    label=f"{optimizer} ({len(curves)} runs)")
            ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, linewidth=0)
            logged = True
        ax.set(title=task, xlabel="training step", ylabel="validation loss (MSE per action dim, normalized actions)")
        if logged:
            ax.set_yscale("log")
            _legend(ax)
    _caption(fig, rows, BAND)
    _save(fig, path)


def _figure(rows: list[dict[str, Any]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    # constrained layout keeps the title and labels inside the figure; the bottom strip holds the caption
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.5, 5.5 * len(tasks)), 5.5), squeeze=False,
                             layout="constrained")
    fig.get_layout_engine().set(rect=(0.0, 0.11, 1.0, 0.89))
    fig.suptitle(title)
    return fig, dict(zip(tasks, axes[0]))


def _styles(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Base and DoPr variant share a colour; the line style and marker tell them apart."""
    import matplotlib.pyplot as plt

    names = optimizer_order(r["optimizer"] for r in rows)
    bases = list(dict.fromkeys(n[len("dopr-"):] if n.startswith("dopr-") else n for n in names))
    styles = {}
    for name in names:
        dopr = name.startswith("dopr-")
        base = name[len("dopr-"):] if dopr else name
        styles[name] = {"color": plt.get_cmap("tab10")(bases.index(base) % 10),
                        "line": "--" if dopr else "-", "marker": "^" if dopr else "o"}
    return styles


def _caption(fig, rows: list[dict[str, Any]], what: str) -> None:
    seeds = sorted({r["seed"] for r in rows})
    episodes = sorted({r["eval_episodes"] for r in rows}, key=str)
    first = sorted({r["eval_seed"] for r in rows}, key=str)
    evaluation = ", ".join(f"{s:,}–{s + e - 1:,}" if isinstance(s, int) and isinstance(e, int) else f"{s}"
                           for s in first for e in episodes)
    same = " (the same for every run)" if len(first) == 1 and len(episodes) == 1 else ""
    text = (f"Training seeds {', '.join(map(str, seeds))} per optimizer; {'/'.join(map(str, episodes))} evaluation "
            f"episodes per run on reset seeds {evaluation}{same}. {what[0].upper() + what[1:]}.")
    fig.text(0.5, 0.015, text, ha="center", va="bottom", fontsize=8, wrap=True)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
