"""The report's files, written atomically from result files alone.

``write_report(DIR)``: ``results.csv`` (one line per run), ``summary.md`` (settings read from the
runs, per-optimizer table, paired DoPr-X - X differences) and five figures. ``write_counts_report``:
the same over several comparisons that differ in the number of demonstrations (every run in one
``results.csv``, each count's paired differences side by side, the figures with a panel per count).
``write_replication_report``: one markdown table comparing the paired differences of a comparison
and of its replicate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dopr_robot.atomic import write_text_atomic
from dopr_robot.report.plots import (
    plot_deviation,
    plot_learning_curves,
    plot_terminal_reward,
    plot_validation_vs_return,
    plot_validation_vs_success,
)
from dopr_robot.report.results import load_rows
from dopr_robot.report.tables import counts_markdown, csv_text, remedies_markdown, replication_markdown, summary_markdown

FIGURES = {"val_loss_vs_success.png": plot_validation_vs_success, "deviation_from_expert.png": plot_deviation,
           "learning_curves.png": plot_learning_curves, "terminal_reward.png": plot_terminal_reward,
           "val_loss_vs_return.png": plot_validation_vs_return}
# Over demonstration counts: a panel per count.
COUNT_FIGURES = {"terminal_reward.png": plot_terminal_reward, "val_loss_vs_return.png": plot_validation_vs_return}


def write_report(out: str | Path) -> list[dict[str, Any]]:
    """Write results.csv, summary.md and the figures for the comparison in ``out``; return the rows."""
    out = Path(out)
    rows = load_rows(out)
    if not rows:
        raise FileNotFoundError(f"no finished runs under {out}/runs")
    write_text_atomic(out / "results.csv", csv_text(rows))
    write_text_atomic(out / "summary.md", summary_markdown(rows))
    for name, plot in FIGURES.items():
        plot(rows, out / name)
    return rows


def write_counts_report(out: str | Path, directories: dict[int, str | Path]) -> list[dict[str, Any]]:
    """Write ``out``/results.csv, summary.md and the figures over the comparisons in ``directories``
    (demonstration count -> its directory, each with its own report); return every run's row."""
    out = Path(out)
    rows = []
    for count, directory in sorted(directories.items()):
        found = load_rows(directory)
        if not found:
            raise FileNotFoundError(f"no finished runs under {Path(directory)}/runs")
        rows += found
    relative = {n: str(Path(d).relative_to(out)) if Path(d).is_relative_to(out) else str(d) for n, d in directories.items()}
    write_text_atomic(out / "results.csv", csv_text(rows))
    write_text_atomic(out / "summary.md", counts_markdown(rows, relative))
    for name, plot in COUNT_FIGURES.items():
        plot(rows, out / name)
    return rows


def write_remedies_report(out: str | Path, directories: dict[str, str | Path], budgets: dict[str, str]
                          ) -> list[dict[str, Any]]:
    """Write ``out``/results.csv (every run, with its remedy) and summary.md (optimizer x remedy, paired
    differences both ways) over the comparisons in ``directories`` (remedy -> its directory; none's is
    ``out`` itself, the others have their own report); ``budgets``: remedy -> what it costs. Returns the rows."""
    out = Path(out)
    rows = []
    for remedy, directory in directories.items():
        found = load_rows(directory)
        if not found:
            raise FileNotFoundError(f"no finished runs of remedy {remedy} under {Path(directory)}/runs")
        rows += found
    write_text_atomic(out / "results.csv", csv_text(rows))
    write_text_atomic(out / "summary.md", remedies_markdown(rows, budgets))
    return rows


def write_replication_report(original_dir: str | Path, replicate_dir: str | Path, out_file: str | Path) -> str:
    """Compare the paired differences of two comparison directories (the same grid, the replicate on
    fresh demonstrations and evaluation seeds); write the table to ``out_file`` and return it."""
    rows = []
    for directory in (original_dir, replicate_dir):
        rows.append(load_rows(directory))
        if not rows[-1]:
            raise FileNotFoundError(f"no finished runs under {Path(directory)}/runs")
    text = replication_markdown(rows[0], rows[1], str(original_dir), str(replicate_dir))
    write_text_atomic(out_file, text)
    return text
