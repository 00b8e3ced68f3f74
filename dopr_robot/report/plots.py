"""The report's figures, each complete on its own: title, axis units, intervals, and a caption
saying how many seeds, episodes per run and which evaluation seeds it shows.

One panel per task (the terminal-reward and validation-vs-return figures: per task and demonstration
count; the learning curves: the validation loss above the success during training, on one step axis).
Each optimizer keeps one colour for its base and its DoPr variant (solid line / circles / filled bars
for the base, dashed line / triangles / hatched bars for DoPr), listed base beside variant.
``<name>_figure(rows)`` builds a figure (the matplotlib Figure, whose artists tests read) and
``plot_<name>(rows, path)`` saves it as a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dopr_robot.atomic import atomic_path
from dopr_robot.optim import base_of, is_dopr
from dopr_robot.report.results import (deviation_curve, episode_values, evaluation_curve, optimizer_order,
                                       validation_curve)
from dopr_robot.report.statistics import BOOTSTRAP_RESAMPLES, cluster_bootstrap, run_band
from dopr_robot.report.tables import METRICS, counted, demo_count, paired_difference

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BAND = "band: 95% percentile bootstrap over runs (B=2000)"
RETURN = next(m for m in METRICS if m.column == "mean_return")


def validation_vs_success_figure(rows: list[dict[str, Any]]) -> Figure:
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
    return fig


def deviation_figure(rows: list[dict[str, Any]]) -> Figure:
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
            ax.plot(mean, color=style["color"], linestyle=style["line"],
                    label=f"{optimizer} ({counted(len(curves), 'run')})")
            ax.fill_between(np.arange(length), low, high, color=style["color"], alpha=0.15, linewidth=0)
        thresholds = {r["divergence_threshold"] for r in task_rows if r["divergence_threshold"] is not None}
        if len(thresholds) == 1:
            ax.axhline(thresholds.pop(), color="grey", linestyle=":", linewidth=1, label="divergence threshold")
        ax.set(title=task, xlabel="t (environment steps)", ylabel="||s_policy - s_expert|| (normalized state units)")
        ax.set_ylim(bottom=0)
        _legend(ax)
    _caption(fig, rows, f"curve: mean over runs of each run's mean over episodes still running at t; {BAND}")
    return fig


def learning_curves_figure(rows: list[dict[str, Any]]) -> Figure:
    """Validation loss against training step per optimizer (from each run's metrics.jsonl), the mean
    over seeds with a 95% band across runs, at the steps every run logged. Where runs evaluated in
    closed loop during training (``--eval-every``), a second panel below, on the same steps, gives
    their success rate: whether the loss tracks the success ("loss does not track reward")."""
    evaluated = any(evaluation_curve(r) for r in rows)
    title = "Validation loss during training (EMA weights, held-out episodes)"
    if evaluated:
        title = "Validation loss (top) and closed-loop success (bottom) during training"
    styles = _styles(rows)
    fig, columns = _grid(rows, title, down=2 if evaluated else 1)
    for task, column in columns.items():
        task_rows = [r for r in rows if r["task"] == task]
        loss = column[0]
        if _step_curves(loss, task_rows, styles, validation_curve):
            loss.set_yscale("log")
        loss.set(title=task, ylabel="validation loss (MSE per action dim, normalized actions)")
        _legend(loss)
        if not evaluated:
            loss.set(xlabel="training step")
            continue
        success = column[1]
        if _step_curves(success, task_rows, styles, evaluation_curve):
            success.set(ylim=(-0.05, 1.05))
            _legend(success)
        else:
            success.text(0.5, 0.5, "not evaluated in closed loop during training", ha="center", va="center",
                         transform=success.transAxes, color="grey")
        success.set(xlabel="training step", ylabel="closed-loop success rate (fraction of episodes)")
    _caption(fig, rows, BAND)
    return fig


def _step_curves(ax, task_rows: list[dict[str, Any]], styles: dict[str, dict[str, Any]], curve_of) -> bool:
    """Per optimizer, the mean over runs of ``curve_of(run)`` ({step: value}) at the steps every run
    logged, with a 95% band across runs; True when any curve was drawn."""
    drawn = False
    for optimizer, style in styles.items():
        curves = [c for c in (curve_of(r) for r in task_rows if r["optimizer"] == optimizer) if c]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        mean, low, high = run_band(np.array([[c[s] for s in steps] for c in curves]))
        ax.plot(steps, mean, color=style["color"], linestyle=style["line"], marker=style["marker"], markersize=3,
                label=f"{optimizer} ({counted(len(curves), 'run')})")
        ax.fill_between(steps, low, high, color=style["color"], alpha=0.15, linewidth=0)
        drawn = True
    return drawn


def terminal_reward_figure(rows: list[dict[str, Any]]) -> Figure:
    """The paper's figure: mean closed-loop return per base optimizer, the base and its DoPr variant
    side by side with 95% cluster-bootstrap intervals, and the paired difference DoPr-X - X with its
    paired interval above each pair; one panel per task and demonstration count."""
    fig, axes = _count_figure(rows, "Terminal reward: mean closed-loop return, base optimizer vs DoPr")
    styles = _styles(rows)
    bases = list(dict.fromkeys(base_of(name) for name in styles))
    width = 0.38
    for (task, count), ax in axes.items():
        panel = [r for r in rows if r["task"] == task and demo_count(r) == count]
        labels = []
        for i, base in enumerate(bases):
            tops = []
            pair = {is_dopr(name): name for name in styles if base_of(name) == base}  # False: X, True: DoPr-X
            for offset, dopr in ((-width / 2, False), (width / 2, True)):
                interval = _mean_return(r for r in panel if r["optimizer"] == pair.get(dopr))
                if interval is None:
                    continue
                mean, low, high = interval
                color = styles[pair[dopr]]["color"]
                ax.bar(i + offset, mean, width=width, color=color, alpha=0.45 if dopr else 0.9, hatch="//" if dopr else None,
                       edgecolor=color, linewidth=1.2)
                ax.errorbar(i + offset, mean, yerr=[[max(mean - low, 0.0)], [max(high - mean, 0.0)]], fmt="none",
                            ecolor="black", capsize=4, linewidth=1)
                tops.append(max(high, 0.0))
            if len(tops) < 2:
                continue
            difference = paired_difference(panel, pair[False], pair[True], RETURN)
            if difference.seeds:
                labels.append((i, max(tops), f"Δ {difference.cell().replace(' [', chr(10) + '[')}"))
        for i, top, text in labels:  # the paired difference above each pair
            ax.annotate(text, xy=(i, top), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.15 * (high - low))  # room for the Δ labels
        ax.set_xticks(range(len(bases)), bases)
        ax.set(title=_panel_title(task, count), xlabel="gradient preconditioner X (filled bar: X, hatched: DoPr-X)",
               ylabel="mean closed-loop return (sum of rewards per episode)")
    _caption(fig, rows, f"bars: mean over training seeds of each run's mean return; error bars: 95% cluster bootstrap "
                        f"over seeds and episodes (B={BOOTSTRAP_RESAMPLES}); Δ: paired DoPr-X - X over seed pairs and "
                        "shared episodes with its 95% interval")
    return fig


def validation_vs_return_figure(rows: list[dict[str, Any]]) -> Figure:
    """One point per run, validation loss against mean closed-loop return (base circles, DoPr
    triangles): a lower validation loss need not mean a higher return. One panel per task and
    demonstration count."""
    fig, axes = _count_figure(rows, "Validation loss vs closed-loop return (one point per run)")
    styles = _styles(rows)
    for (task, count), ax in axes.items():
        losses = []
        for optimizer, style in styles.items():
            runs = [r for r in rows if r["task"] == task and demo_count(r) == count and r["optimizer"] == optimizer
                    and r["val_loss"] is not None and r["mean_return"] is not None]
            if not runs:
                continue
            losses += [r["val_loss"] for r in runs]
            ax.plot([r["val_loss"] for r in runs], [r["mean_return"] for r in runs], linestyle="none",
                    marker=style["marker"], color=style["color"], markersize=7, alpha=0.85, label=optimizer)
        positive = [v for v in losses if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        ax.set(title=_panel_title(task, count), xlabel="validation loss (MSE per action dim, normalized actions)",
               ylabel="mean closed-loop return per run")
        _legend(ax)
    _caption(fig, rows, "each point: one run's validation loss (EMA weights, held-out episodes) and mean return over "
                        "its evaluation episodes; circles: base optimizers, triangles: DoPr")
    return fig


def plot_validation_vs_success(rows: list[dict[str, Any]], path: str | Path) -> None:
    """:func:`validation_vs_success_figure` saved as a PNG at ``path``."""
    _save(validation_vs_success_figure(rows), path)

def plot_deviation(rows: list[dict[str, Any]], path: str | Path) -> None:
    """:func:`deviation_figure` saved as a PNG at ``path``."""
    _save(deviation_figure(rows), path)

def plot_learning_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """:func:`learning_curves_figure` saved as a PNG at ``path``."""
    _save(learning_curves_figure(rows), path)

def plot_terminal_reward(rows: list[dict[str, Any]], path: str | Path) -> None:
    """:func:`terminal_reward_figure` saved as a PNG at ``path``."""
    _save(terminal_reward_figure(rows), path)

def plot_validation_vs_return(rows: list[dict[str, Any]], path: str | Path) -> None:
    """:func:`validation_vs_return_figure` saved as a PNG at ``path``."""
    _save(validation_vs_return_figure(rows), path)


def _mean_return(runs: Any) -> tuple[float, float, float] | None:
    """(mean over runs of each run's mean return, 95% cluster-bootstrap interval), or None without runs."""
    per_seed = [episode_values(r, "return") for r in runs]
    if not per_seed or any(values is None for values in per_seed):
        return None
    return cluster_bootstrap([list(values.values()) for values in per_seed])


def _panel_title(task: str, count: Any) -> str:
    return f"{task}, {count} demonstrations" if count is not None else task


def _count_figure(rows: list[dict[str, Any]], title: str):
    """One panel per (task, demonstration count): tasks down, counts across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    counts = sorted({demo_count(r) for r in rows}, key=lambda n: (not isinstance(n, int), str(n)))
    fig, axes = plt.subplots(len(tasks), len(counts), figsize=(max(6.5, 5.2 * len(counts)), 0.6 + 4.9 * len(tasks)),
                             squeeze=False, layout="constrained")
    strip = 0.6 / (0.6 + 4.9 * len(tasks)) + 0.02  # the caption's strip at the bottom, about 0.6 inch
    fig.get_layout_engine().set(rect=(0.0, strip, 1.0, 1.0 - strip))
    fig.suptitle(title)
    return fig, {(task, count): axes[i][j] for i, task in enumerate(tasks) for j, count in enumerate(counts)}


def _figure(rows: list[dict[str, Any]], title: str):
    """One panel per task, side by side."""
    fig, columns = _grid(rows, title, down=1)
    return fig, {task: column[0] for task, column in columns.items()}


def _grid(rows: list[dict[str, Any]], title: str, down: int):
    """A column of ``down`` panels per task (sharing the x axis), tasks across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    height = 0.6 + 4.9 * down
    # constrained layout keeps the title and labels inside the figure; the bottom strip (about 0.6 inch)
    # holds the caption
    fig, axes = plt.subplots(down, len(tasks), figsize=(max(6.5, 5.5 * len(tasks)), height), squeeze=False,
                             sharex="col", layout="constrained")
    strip = 0.6 / height
    fig.get_layout_engine().set(rect=(0.0, strip, 1.0, 1.0 - strip))
    fig.suptitle(title)
    return fig, {task: list(axes[:, j]) for j, task in enumerate(tasks)}


def _styles(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Base and DoPr variant share a colour; the line style and marker tell them apart."""
    import matplotlib.pyplot as plt

    names = optimizer_order(r["optimizer"] for r in rows)
    bases = list(dict.fromkeys(base_of(name) for name in names))
    styles = {}
    for name in names:
        dopr = is_dopr(name)
        styles[name] = {"color": plt.get_cmap("tab10")(bases.index(base_of(name)) % 10),
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
