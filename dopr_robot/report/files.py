"""The report's files, written atomically from result files alone.

``write_report(DIR)``: ``results.csv`` (one line per run), ``summary.md`` (settings read from the
runs, per-optimizer table, paired DoPr-X - X differences) and three figures. ``write_replication_report``:
one markdown table comparing the paired differences of a comparison and of its replicate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dopr_robot.atomic import write_text_atomic
from dopr_robot.report.plots import plot_deviation, plot_learning_curves, plot_validation_vs_success
from dopr_robot.report.results import load_rows
from dopr_robot.report.tables import csv_text, replication_markdown, summary_markdown

FIGURES = {"val_loss_vs_success.png": plot_validation_vs_success, "deviation_from_expert.png": plot_deviation,
           "learning_curves.png": plot_learning_curves}


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
