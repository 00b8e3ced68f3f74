"""The report's tables: results.csv, summary.md (per task: settings, optimizers, paired
differences DoPr-X - X), the summary over demonstration counts (each count's paired differences
side by side) and the replication table of two comparisons.

Which interval each cell shows is decided per metric (:data:`METRICS`): metrics with a value per
episode get the cluster bootstrap over seeds and episodes, metrics with one value per run the
t-interval over seeds (with enough seeds); :mod:`dopr_robot.report.statistics` says why.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dopr_robot.optim import base_of, is_dopr
from dopr_robot.report.results import COLUMNS, episode_values, optimizer_order
from dopr_robot.report.statistics import (
    BOOTSTRAP_RESAMPLES,
    MIN_SEEDS_FOR_T,
    cluster_bootstrap,
    paired_cluster_bootstrap,
    t_interval,
)


@dataclass(frozen=True)
class Metric:
    """A summary column. ``record`` names the per-episode value in eval.json's records (cluster
    bootstrap); None means one value per run (column ``column``; t-interval over seeds).
    ``bounds``: the metric's range, to which intervals are clipped (a difference's range is
    ``(low - high, high - low)``)."""

    column: str
    heading: str
    record: str | None
    bounds: tuple[float, float] | None = None

    @property
    def tag(self) -> str:
        return "b" if self.record else "t"


METRICS = [
    Metric("success_rate", "success rate", "success", (0.0, 1.0)),
    Metric("mean_return", "return", "return"),
    Metric("val_loss", "validation loss", None),
    Metric("j_traj", "J_traj", "j_traj"),
    Metric("time_to_divergence", "time to divergence (steps)", "time_to_divergence"),
    Metric("diverged_fraction", "diverged", "diverged", (0.0, 1.0)),
    Metric("deviation_at_half", "deviation at T/2", None),
    Metric("action_error_ratio", "on-policy / on-expert action error", None),
]
# Shown for a task whose runs evaluated during training (--eval-every); the success column is then
# headed "final success rate", so that both say which checkpoint they are.
BEST_SUCCESS = Metric("best_eval_success_rate", "best-checkpoint success rate", None, (0.0, 1.0))
FINAL_SUCCESS = Metric("success_rate", "final success rate", "success", (0.0, 1.0))
REPLICATION_METRICS = ["success_rate", "mean_return", "val_loss", "j_traj", "time_to_divergence"]

BOOTSTRAP_NAME = f"95% cluster bootstrap over seeds and episodes (B={BOOTSTRAP_RESAMPLES})"
LEGEND = [
    f"- **[b]** mean over training seeds of each run's mean over episodes [{BOOTSTRAP_NAME}: seeds "
    "resampled with replacement, then episodes within each resampled seed; clipped to the metric's range].",
    f"- **[t]** one number per run: mean over seeds [95% t-interval over seeds; clipped to the metric's "
    f"range], shown with at least {MIN_SEEDS_FOR_T} seeds; with fewer, the mean {{the per-seed values}}.",
    "- *validation loss*: on held-out expert episodes (EMA weights): the mean squared error of the policy's "
    "actions against the expert's in normalized units — a regressor's prediction, a flow policy's sampled "
    "actions (its flow-matching loss is logged as val_flow_loss in metrics.jsonl). Everything else is closed-loop on "
    "the evaluation episodes. *J_traj*: summed capped state+action deviation from the expert rolled out "
    "from the same initial state. *time to divergence*: first step at which the state deviation from the "
    "expert exceeds the evaluation's threshold; an episode that never does counts as the length of its "
    "episode pair (the horizon unless both ended early): a restricted mean. *diverged*: fraction of episodes that did. "
    "*deviation at T/2*: mean state deviation (normalized state units) at half the horizon. "
    "*on-policy / on-expert action error*: the action error at the policy's own states over the same at "
    "the expert's states.",
    "- *final success rate* (tasks whose runs evaluated during training, `--eval-every`): the success rate "
    "above, of the final checkpoint; *best-checkpoint success rate*: the best success rate among the "
    "evaluations during training (on the same evaluation episodes), robomimic's metric; step of the best "
    "in results.csv (best_eval_step).",
]


def csv_text(rows: list[dict[str, Any]]) -> str:
    """results.csv: one line per run, the columns of :data:`~dopr_robot.report.results.COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """summary.md: how to read it, then per task the settings its runs used, a table of optimizers
    and a table of paired differences DoPr-X - X."""
    lines = ["# Comparison summary", "", "How to read the cells:", "", *LEGEND, ""]
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        optimizers = optimizer_order(r["optimizer"] for r in task_rows)
        metrics = task_metrics(task_rows)
        lines += [f"## {task}", "", settings_line(task_rows), "",
                  f"Per optimizer: [b] = {BOOTSTRAP_NAME}; [t] = 95% t-interval over seeds (≥ {MIN_SEEDS_FOR_T} seeds).", "",
                  "| optimizer | seeds | " + " | ".join(_heading(m) for m in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for optimizer in optimizers:
            runs = [r for r in task_rows if r["optimizer"] == optimizer]
            lines.append(f"| {optimizer} | {len(runs)} | " + " | ".join(optimizer_cell(runs, m) for m in metrics) + " |")
        pairs = dopr_pairs(optimizers)
        if pairs:
            lines += ["", "Paired difference DoPr-X - X, seed by seed (same demonstrations, initial weights, batch order "
                      f"and evaluation reset seeds): [b] = {BOOTSTRAP_NAME}, resampling seed pairs and then the "
                      "evaluation episodes shared by both runs of a pair; [t] = 95% t-interval over the per-seed "
                      f"differences (≥ {MIN_SEEDS_FOR_T} seed pairs).", "",
                      "| pair | seeds | episodes/run | " + " | ".join(_heading(m) for m in metrics) + " |",
                      "|---|---|---|" + "---|" * len(metrics)]
            notes, in_words = set(), []
            success_at = next(i for i, m in enumerate(metrics) if m.column == "success_rate")
            for base, dopr in pairs:
                differences = [paired_difference(task_rows, base, dopr, m) for m in metrics]
                notes |= {d.note for d in differences if d.note}
                episodes = sorted({r["eval_episodes"] for r in task_rows if r["optimizer"] in (base, dopr)}, key=str)
                lines.append(f"| {dopr} - {base} | {differences[0].seeds} | {'/'.join(map(str, episodes))} | "
                             + " | ".join(d.cell() for d in differences) + " |")
                in_words.append(f"In words: {success_in_words(task_rows, base, dopr, differences[success_at])}")
            lines += [""] + [f"Note: {note}" for note in sorted(notes)]
            if any(r.get("success_rate") not in (None, "") for r in task_rows):  # tasks with a success rule
                lines += [""] + in_words
        lines.append("")
    return "\n".join(lines)


def task_metrics(task_rows: list[dict[str, Any]]) -> list[Metric]:
    """The summary's columns for one task: :data:`METRICS`, and where any run evaluated during
    training the best-checkpoint success rate beside the final one (labelled as such)."""
    if all(r.get(BEST_SUCCESS.column) is None for r in task_rows):
        return list(METRICS)
    metrics = [FINAL_SUCCESS if m.column == FINAL_SUCCESS.column else m for m in METRICS]
    at = next(i for i, m in enumerate(metrics) if m.column == FINAL_SUCCESS.column)
    return metrics[:at + 1] + [BEST_SUCCESS] + metrics[at + 1:]


# A difference in success rate whose interval is at most this wide is resolved even when it includes 0:
# it then bounds how large the difference can be (the quickstart is sized to reach it).
RESOLVED_WIDTH = 0.20


def success_in_words(task_rows: list[dict[str, Any]], base: str, dopr: str,
                     difference: PairedDifference | None = None) -> str:
    """One sentence on DoPr-X - X's success rate over ``task_rows``: better or worse when its 95% interval
    excludes 0; resolved as no gain above the interval's upper end and no loss below its lower end when it
    includes 0 but is at most :data:`RESOLVED_WIDTH` wide; otherwise not resolved, with what would resolve
    it. Never resolved on fewer than MIN_SEEDS_FOR_T seed pairs (the interval then hardly varies the training).
    ``difference``: that success difference when the caller has it already (the bootstrap is not redone)."""
    if difference is None:
        difference = paired_difference(task_rows, base, dopr, METRICS[0])
    if not difference.seeds or not math.isfinite(difference.low):
        return f"{dopr} - {base} success rate: no interval (no paired evaluation episodes)."
    width = difference.high - difference.low
    said = (f"{dopr} - {base} success rate {difference.cell()} over {counted(difference.seeds, 'seed pair')} "
            f"(95% interval {width:.2f} wide)")
    if width == 0:  # every paired episode ended alike (e.g. all failed): the bootstrap has nothing to resample
        return (f"{said}: not resolved, every paired episode ended the same way in both runs, so the interval is a "
                "point; more evaluation episodes (--eval-episodes) or training steps would tell them apart.")
    if difference.seeds < MIN_SEEDS_FOR_T and (difference.excludes_zero() or width <= RESOLVED_WIDTH):
        # Resampling one or two seed pairs varies the evaluation episodes, hardly the training runs: a narrow
        # interval then says how these runs differ, not how the optimizers do.
        seen = (f"{dopr} succeeded {'more' if difference.estimate > 0 else 'less'} often than {base}"
                if difference.excludes_zero() else "they succeeded about equally often")
        return (f"{said}: not resolved, on these seeds {seen}, but with fewer than {MIN_SEEDS_FOR_T} seed pairs the "
                f"interval holds the evaluation episodes' variation, not the training seeds'; --seeds "
                f"{MIN_SEEDS_FOR_T} or more would tell.")
    if difference.excludes_zero():
        return f"{said}: resolved, {dopr} succeeds {'more' if difference.estimate > 0 else 'less'} often than {base}."
    if width <= RESOLVED_WIDTH:
        # each side bounded by its own end: an interval ending at 0 makes any change that way unlikely
        gain = f"a gain larger than {difference.high:.2f}" if difference.high > 0 else "any gain"
        loss = f"a loss larger than {-difference.low:.2f}" if difference.low < 0 else "any loss"
        return f"{said}: resolved as no clear difference; {gain} or {loss} is unlikely."
    return (f"{said}: not resolved, the interval includes 0 and is wider than {RESOLVED_WIDTH:.2f}; more seeds "
            "(--seeds) or evaluation episodes (--eval-episodes) would narrow it.")


# Several demonstration counts: each count's comparison, side by side.

COUNT_METRICS = ["mean_return", "success_rate", "val_loss"]


def counted(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def demo_count(row: dict[str, Any]) -> Any:
    """The number of demonstration episodes the run trained on (from its checkpoint's dataset record)."""
    return row["demo_episodes"]


def counts_markdown(rows: list[dict[str, Any]], directories: dict[int, str]) -> str:
    """summary.md of a grid over demonstration counts: per task and metric (return, success, validation
    loss), every optimizer and every paired difference DoPr-X - X at each count, side by side.
    ``directories``: count -> the directory (relative to this summary) of that count's comparison."""
    counts = sorted({demo_count(r) for r in rows}, key=lambda n: (not isinstance(n, int), str(n)))
    heading = " | ".join(f"{n} demos" for n in counts)
    links = ", ".join(f"[{n} demos]({directories[n]}/summary.md)" for n in counts if n in directories)
    lines = ["# Comparison over demonstration counts", "",
             f"Each count is a full comparison in its own directory, with the settings its runs used and every metric: "
             f"{links}. Here, per task, each count side by side: per optimizer, and the paired difference DoPr-X - X "
             "seed by seed (same demonstrations, initial weights, batch order and evaluation reset seeds). "
             f"[b] = {BOOTSTRAP_NAME} (paired: seed pairs, then the episodes both runs played); [t] = 95% t-interval "
             f"over seeds (≥ {MIN_SEEDS_FOR_T} seeds; with fewer, the mean {{per-seed values}}); a difference in bold: "
             "its interval excludes 0. "
             "Figures: terminal_reward.png (return per base optimizer, base beside DoPr), "
             "val_loss_vs_return.png (one point per run).", ""]
    metrics = [m for m in METRICS if m.column in COUNT_METRICS]
    metrics.sort(key=lambda m: COUNT_METRICS.index(m.column))
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        optimizers = optimizer_order(r["optimizer"] for r in task_rows)
        by_count = {n: [r for r in task_rows if demo_count(r) == n] for n in counts}
        lines += [f"## {task}", ""]
        for metric in metrics:
            lines += [f"### {_heading(metric)}", "", f"| | {heading} |", "|---|" + "---|" * len(counts)]
            for optimizer in optimizers:
                cells = []
                for n in counts:
                    runs = [r for r in by_count[n] if r["optimizer"] == optimizer]
                    cells.append(f"{optimizer_cell(runs, metric)} ({len(runs)} seeds)" if runs else "—")
                lines.append(f"| {optimizer} | " + " | ".join(cells) + " |")
            for base, dopr in dopr_pairs(optimizers):
                cells = []
                for n in counts:
                    difference = paired_difference(by_count[n], base, dopr, metric)
                    cell = f"**{difference.cell()}**" if difference.excludes_zero() else difference.cell()
                    cells.append(f"{cell} ({difference.seeds} pairs)" if difference.seeds else "—")
                lines.append(f"| {dopr} - {base} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


# Remedies (none, noise:SIGMA, dagger:ROUNDS): a grid axis beside the optimizer.

REMEDY_METRICS = ["success_rate", "mean_return", "val_loss"]


def remedy_order(remedies: Any) -> list[str]:
    """Distinct remedies, none first, then as named."""
    return sorted(set(remedies), key=lambda r: (r != "none", r))


def remedies_markdown(rows: list[dict[str, Any]], budgets: dict[str, str]) -> str:
    """summary.md of a grid over remedies: per task and metric, a table optimizer x remedy with the
    paired differences DoPr-X - X within each remedy, then remedy - none within each optimizer (seed by
    seed); and the expert labels each remedy used. ``budgets``: remedy -> its data and training budget."""
    remedies = remedy_order(r["remedy"] for r in rows)
    lines = ["# Comparison over remedies", "",
             "Every (task, optimizer, remedy, seed) cell trains from the same initial weights per seed and is evaluated "
             f"on the same reset seeds. [b] = {BOOTSTRAP_NAME} (paired: seed pairs, then the episodes both runs "
             f"played); [t] = 95% t-interval over seeds (≥ {MIN_SEEDS_FOR_T} seeds; with fewer, the mean {{per-seed "
             "values}); a difference in bold: its interval excludes 0. Each remedy beside none is a full comparison "
             "in remedies/<remedy>/ with every metric.", "", "Budgets:", "", *[f"- {budgets[r]}" for r in remedies
                                                                              if r in budgets], ""]
    metrics = sorted((m for m in METRICS if m.column in REMEDY_METRICS), key=lambda m: REMEDY_METRICS.index(m.column))
    for task in sorted({r["task"] for r in rows}):
        task_rows = [r for r in rows if r["task"] == task]
        optimizers = optimizer_order(r["optimizer"] for r in task_rows)
        lines += [f"## {task}", "", "Expert labels each remedy used (demonstration transitions + relabelled states), "
                  "mean per run: " + "; ".join(f"{r} {_labels(task_rows, r)}" for r in remedies), ""]
        for metric in metrics:
            lines += [f"### {_heading(metric)}", "", "| | " + " | ".join(remedies) + " |", "|---|" + "---|" * len(remedies)]
            for optimizer in optimizers:
                cells = []
                for remedy in remedies:
                    runs = [r for r in task_rows if r["optimizer"] == optimizer and r["remedy"] == remedy]
                    cells.append(f"{optimizer_cell(runs, metric)} ({len(runs)} seeds)" if runs else "—")
                lines.append(f"| {optimizer} | " + " | ".join(cells) + " |")
            for base, dopr in dopr_pairs(optimizers):
                cells = [_difference_cell([r for r in task_rows if r["remedy"] == remedy], base, dopr, metric)
                         for remedy in remedies]
                lines.append(f"| {dopr} - {base} | " + " | ".join(cells) + " |")
            others = [r for r in remedies if r != "none"]
            if "none" in remedies and others:
                lines += ["", "| remedy - none | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
                for optimizer in optimizers:
                    by_remedy = [{**r, "optimizer": r["remedy"]} for r in task_rows if r["optimizer"] == optimizer]
                    lines.append(f"| {optimizer} | " + " | ".join(_difference_cell(by_remedy, "none", remedy, metric)
                                                                    for remedy in others) + " |")
            lines.append("")
    return "\n".join(lines)


def _difference_cell(rows: list[dict[str, Any]], base: str, other: str, metric: Metric) -> str:
    """``other - base`` seed by seed over ``rows`` (paired by their ``optimizer`` key), bold when its
    interval excludes 0, with the number of pairs."""
    difference = paired_difference(rows, base, other, metric)
    if not difference.seeds:
        return "—"
    cell = f"**{difference.cell()}**" if difference.excludes_zero() else difference.cell()
    return f"{cell} ({difference.seeds} pairs)"


def _labels(rows: list[dict[str, Any]], remedy: str) -> str:
    values = [r["expert_labels"] for r in rows if r["remedy"] == remedy and r.get("expert_labels") is not None]
    return f"{round(sum(values) / len(values)):,}" if values else "unknown"


def dopr_pairs(optimizers: list[str]) -> list[tuple[str, str]]:
    """(X, DoPr-X) for every base X present together with its DoPr variant."""
    return [(base_of(name), name) for name in optimizers if is_dopr(name) and base_of(name) in optimizers]


def optimizer_cell(runs: list[dict[str, Any]], metric: Metric) -> str:
    """One optimizer's cell: [b] bootstrap from the episode records, or [t] over the per-run values."""
    if metric.record is None:
        return _per_run_cell([r[metric.column] for r in runs], metric.bounds)
    per_seed = [episode_values(r, metric.record) for r in runs]
    if not runs or any(values is None for values in per_seed):
        return "n/a"
    return _format(*cluster_bootstrap([list(values.values()) for values in per_seed], bounds=metric.bounds))


@dataclass(frozen=True)
class PairedDifference:
    """DoPr-X - X for one metric on one task: estimate and interval (nan when unavailable), the
    number of seed pairs, the per-seed differences (for [t] metrics), and a note when data is missing."""

    estimate: float
    low: float
    high: float
    seeds: int
    per_seed: tuple[float, ...] = ()
    note: str = ""

    def cell(self) -> str:
        if not math.isfinite(self.estimate):
            return "n/a"
        if math.isfinite(self.low) or not self.per_seed:
            return _format(self.estimate, self.low, self.high, signed=True)
        return _with_per_seed(self.estimate, self.per_seed, signed=True)

    def excludes_zero(self) -> bool:
        return math.isfinite(self.low) and (self.low > 0 or self.high < 0)


def paired_difference(task_rows: list[dict[str, Any]], base: str, dopr: str, metric: Metric) -> PairedDifference:
    """DoPr-X - X over the training seeds both have: [b] metrics by the paired cluster bootstrap over
    seed pairs and the episodes both runs of a pair played (matched by evaluation reset seed); [t]
    metrics by the t-interval over the per-seed differences, with at least MIN_SEEDS_FOR_T pairs."""
    by_seed = {r["seed"]: r for r in task_rows if r["optimizer"] == base}
    pairs = [(by_seed[r["seed"]], r) for r in task_rows if r["optimizer"] == dopr and r["seed"] in by_seed]
    nan = math.nan
    if not pairs:
        return PairedDifference(nan, nan, nan, 0)
    if metric.record is None:
        values = [d[metric.column] - b[metric.column] for b, d in pairs
                  if b[metric.column] is not None and d[metric.column] is not None]
        if len(values) < len(pairs):
            return PairedDifference(nan, nan, nan, len(pairs))
        mean, low, high = t_interval(values, bounds=_difference_bounds(metric))
        if len(values) < MIN_SEEDS_FOR_T:
            low = high = nan
        return PairedDifference(mean, low, high, len(pairs), tuple(values))
    base_values, dopr_values, note = [], [], ""
    for b, d in pairs:
        b_episodes, d_episodes = episode_values(b, metric.record), episode_values(d, metric.record)
        if b_episodes is None or d_episodes is None:
            return PairedDifference(nan, nan, nan, len(pairs))
        shared = [seed for seed in b_episodes if seed in d_episodes]
        if len(shared) < max(len(b_episodes), len(d_episodes)):
            note = (f"some {dopr}/{base} runs were evaluated on different reset seeds; their paired "
                    "differences use only the episodes both played")
        if not shared:
            return PairedDifference(nan, nan, nan, len(pairs), note=note)
        base_values.append([b_episodes[s] for s in shared])
        dopr_values.append([d_episodes[s] for s in shared])
    return PairedDifference(*paired_cluster_bootstrap(base_values, dopr_values, bounds=_difference_bounds(metric)),
                            len(pairs), note=note)


def _difference_bounds(metric: Metric) -> tuple[float, float] | None:
    """The range of a difference of two values of ``metric``: (low - high, high - low)."""
    return None if metric.bounds is None else (metric.bounds[0] - metric.bounds[1], metric.bounds[1] - metric.bounds[0])


# Settings: every number from the runs' own files, per task.

DISAGREE = "**runs disagree:**"  # opens a setting the runs hold different values of

def settings_line(task_rows: list[dict[str, Any]]) -> str:
    """What the task's runs used, read from each run's eval.json (checkpoint, dataset, evaluation) and
    config.json; a value the runs disagree on is shown with the runs holding each value, except that
    the settings a grid may give each optimizer (lr, weight decay, warmup, grad clip, optimizer options,
    damping) are listed per optimizer when each optimizer's runs agree."""
    dopr_rows = [r for r in task_rows if is_dopr(r["optimizer"])]
    config = lambda key: lambda r: (r["_config"] or {}).get(key)  # noqa: E731
    dataset = lambda key: lambda r: (r["_dataset"] or {}).get(key)  # noqa: E731
    metadata = lambda key: lambda r: ((r["_dataset"] or {}).get("metadata") or {}).get(key)  # noqa: E731
    checkpoint = lambda key: lambda r: r["_checkpoint"].get(key)  # noqa: E731
    agreed = lambda getter, rows=task_rows: _agreed(rows, getter)  # noqa: E731
    # What a grid's optimizer_settings may set: shown per optimizer when the optimizers differ on it
    per_optimizer = lambda getter, rows=task_rows: _agreed(rows, getter, per_optimizer=True)  # noqa: E731
    first_seed, episodes = _agreed(task_rows, lambda r: r["eval_seed"]), _agreed(task_rows, lambda r: r["eval_episodes"])
    last_seed = ""
    if _is_int(first_seed) and _is_int(episodes):
        last_seed = f"–{int(first_seed) + int(episodes) - 1:,}"
    parts = [
        f"policy `{agreed(checkpoint('policy'))}` (history {agreed(checkpoint('history'))}, chunk "
        f"{agreed(checkpoint('chunk'))}, options {agreed(config('policy_options'))}, EMA weights "
        f"{agreed(checkpoint('use_ema'))})",
        f"{agreed(checkpoint('step'))} training steps, batch {agreed(config('batch_size'))}, lr "
        f"{per_optimizer(config('lr'))}, weight decay {per_optimizer(config('weight_decay'))}, warmup "
        f"{per_optimizer(config('warmup_steps'))}, grad clip {per_optimizer(config('grad_clip'))}, EMA decay "
        f"{agreed(config('ema_decay'))}, optimizer options {per_optimizer(config('optimizer_options'))}"
        + (f", DoPr damping {per_optimizer(config('damping'), dopr_rows)}" if dopr_rows else ""),
        f"demonstrations: {agreed(dataset('episodes'))} episodes ({agreed(dataset('train_episodes'))} train, "
        f"{agreed(dataset('valid_episodes'))} validation) from {_demonstration_file(task_rows)}, expert "
        f"{agreed(metadata('expert_kind'))}, noise {agreed(metadata('noise'))}, collection seeds from "
        f"{agreed(metadata('seed'))}",
        f"evaluation: {episodes} episodes per run, reset seeds {_thousands(first_seed)}{last_seed}",
    ]
    return "Settings (read from the runs' eval.json and config.json): " + "; ".join(parts) + "."


def _demonstration_file(rows: list[dict[str, Any]]) -> str:
    """The file the runs trained on. Its content (the sha256 each run recorded of it) is what must
    agree: one file read at two paths (a grid grown from a copy of another's runs) is one source, said
    so with the paths, and two contents, at one path or not, are runs that disagree."""
    path = lambda r: (r["_dataset"] or {}).get("source")  # noqa: E731
    digest = lambda r: ((r["_dataset"] or {}).get("sha256") or "")[:12] or None  # noqa: E731
    paths, contents = _holders(rows, path), _holders(rows, digest)
    if "unknown" in contents or len(contents) == 1 and len(paths) == 1:  # no digest to go by, or one file, one path
        located = _agreed(rows, path)
        return located if located.startswith(DISAGREE) else f"`{located}`"
    at = " and ".join(f"`{value}` ({', '.join(runs)})" for value, runs in paths.items())
    if len(contents) == 1:
        return f"one file (sha256 {next(iter(contents))}…) at {at}"
    return (f"{DISAGREE} files of different content: " +
            " vs ".join(f"sha256 {value}… ({', '.join(runs)})" for value, runs in contents.items()) + f", at {at}")


def _holders(rows: list[dict[str, Any]], getter: Callable[[dict[str, Any]], Any]) -> dict[str, list[str]]:
    """Each value ``getter`` gives the rows ("unknown" for None), with the runs that hold it."""
    holders: dict[str, list[str]] = {}
    for row in rows:
        value = getter(row)
        holders.setdefault("unknown" if value is None else _plain(value), []).append(f"{row['optimizer']} seed {row['seed']}")
    return holders


def _agreed(rows: list[dict[str, Any]], getter: Callable[[dict[str, Any]], Any], per_optimizer: bool = False) -> str:
    """The one value all ``rows`` hold ("unknown" where a file does not say), or, when they differ,
    every value with the runs that hold it; with ``per_optimizer``, when every optimizer's runs agree
    but the optimizers do not, each optimizer's value ("per optimizer: adamw 0.001, muon 0.02")."""
    holders = _holders(rows, getter)
    if len(holders) <= 1:
        return next(iter(holders), "unknown")
    if per_optimizer:
        optimizers = optimizer_order(r["optimizer"] for r in rows)
        each = {name: _agreed([r for r in rows if r["optimizer"] == name], getter) for name in optimizers}
        if not any(value.startswith(DISAGREE) for value in each.values()):
            return "per optimizer: " + ", ".join(f"{name} {value}" for name, value in each.items())
    return f"{DISAGREE} " + " vs ".join(f"{value} ({', '.join(runs)})" for value, runs in holders.items())


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in sorted(value.items())) + "}" if value else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _thousands(text: str) -> str:
    return f"{int(text):,}" if _is_int(text) else text


# Replication: the same grid on fresh demonstrations and fresh evaluation seeds.

VERDICTS = [
    "- **replicates**: both 95% intervals exclude 0 and lie on the same side of it.",
    "- **does not replicate**: the original interval excludes 0 and the replicate's does not lie on the same "
    "side (it contains 0, or lies on the other side: marked *reversed*).",
    "- **inconclusive**: the original interval contains 0 (no difference was established, so there is none "
    "to replicate), either interval is n/a (missing data), or either side has fewer than "
    f"{MIN_SEEDS_FOR_T} seed pairs (its interval then varies the evaluation episodes, hardly the training).",
]


def verdict(original: PairedDifference, replicate: PairedDifference) -> str:
    """"replicates" / "does not replicate" (possibly "(reversed)") / "inconclusive", as in :data:`VERDICTS`."""
    if (not (math.isfinite(original.low) and math.isfinite(replicate.low)) or not original.excludes_zero()
            or min(original.seeds, replicate.seeds) < MIN_SEEDS_FOR_T):
        return "inconclusive"
    same_side = replicate.excludes_zero() and (original.low > 0) == (replicate.low > 0)
    if same_side:
        return "replicates"
    return "does not replicate" + (" (reversed)" if replicate.excludes_zero() else "")


def replication_markdown(original_rows: list[dict[str, Any]], replicate_rows: list[dict[str, Any]],
                         original_label: str, replicate_label: str) -> str:
    """Per task and DoPr-X - X pair present in both comparisons: the paired difference on each (same
    intervals as summary.md), whether the signs agree, whether both intervals exclude 0, and the verdict."""
    lines = [f"# Replication: {original_label} vs {replicate_label}", "",
             f"The same grid rerun on fresh demonstrations and fresh evaluation seeds. Each cell is the paired "
             f"difference DoPr-X - X with its interval as in summary.md ([b] = {BOOTSTRAP_NAME}, resampling seed "
             f"pairs and then the episodes both runs of a pair played; [t] = 95% t-interval over per-seed differences, ≥ {MIN_SEEDS_FOR_T} pairs). "
             "*sign agrees*: the two point estimates are both positive or both negative. Verdicts:", "", *VERDICTS, ""]
    metrics = [m for m in METRICS if m.column in REPLICATION_METRICS]
    for task in sorted({r["task"] for r in original_rows} & {r["task"] for r in replicate_rows}):
        original_task = [r for r in original_rows if r["task"] == task]
        replicate_task = [r for r in replicate_rows if r["task"] == task]
        original_pairs = dopr_pairs(optimizer_order(r["optimizer"] for r in original_task))
        replicate_pairs = set(dopr_pairs(optimizer_order(r["optimizer"] for r in replicate_task)))
        pairs = [pair for pair in original_pairs if pair in replicate_pairs]
        if not pairs:
            continue
        lines += [f"## {task}", "", f"{original_label}: {settings_line(original_task)}", "",
                  f"{replicate_label}: {settings_line(replicate_task)}", "",
                  f"| pair | metric | {original_label} | {replicate_label} | sign agrees | "
                  "both exclude 0 | verdict |", "|---|---|---|---|---|---|---|"]
        for base, dopr in pairs:
            for metric in metrics:
                a = paired_difference(original_task, base, dopr, metric)
                b = paired_difference(replicate_task, base, dopr, metric)
                agrees = bool(np.sign(a.estimate) * np.sign(b.estimate) > 0)  # False for a nan or a zero
                lines.append(f"| {dopr} - {base} | {_heading(metric)} | {a.cell()} ({a.seeds} seeds) | "
                             f"{b.cell()} ({b.seeds} seeds) | {'yes' if agrees else 'no'} | "
                             f"{'yes' if a.excludes_zero() and b.excludes_zero() else 'no'} | {verdict(a, b)} |")
        lines.append("")
    return "\n".join(lines)


def _heading(metric: Metric) -> str:
    return f"{metric.heading} [{metric.tag}]"


def _per_run_cell(values: list[float | None], bounds: tuple[float, float] | None = None) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    mean, low, high = t_interval(values, bounds=bounds)
    if len(values) >= MIN_SEEDS_FOR_T:
        return _format(mean, low, high)
    return _with_per_seed(mean, values)


def _three_figures(value: float, signed: bool = False) -> str:
    """``value`` to 3 significant figures, written out in full from 1000 up (a locomotion return reads
    2660, not 2.66e+03); small magnitudes keep the exponent (2.5e-05)."""
    text = f"{value:+.3g}" if signed else f"{value:.3g}"
    if "e+" in text:
        text = f"{float(text):+.0f}" if signed else f"{float(text):.0f}"
    return text


def _with_per_seed(mean: float, values: Sequence[float], signed: bool = False) -> str:
    """Too few seeds for an interval: the mean and, in braces, the per-seed values."""
    return _three_figures(mean, signed) + " {" + ", ".join(_three_figures(v, signed) for v in values) + "}"


def _format(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "n/a"
    scale = max(abs(v) for v in (mean, low, high) if math.isfinite(v))

    def fmt(value: float) -> str:
        # Floating-point residue of a resampled mean (e.g. -5.6e-18 for 0.096 - 0.096) is zero.
        value = 0.0 if abs(value) <= 1e-12 * scale else value
        return _three_figures(value, signed)

    return fmt(mean) if not math.isfinite(low) else f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
