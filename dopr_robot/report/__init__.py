"""Tables and plots of a comparison, made from its result files alone (``runs/**/eval.json`` and
each run's ``config.json`` and ``metrics.jsonl``).

    results.py     result files -> rows (one per run), optimizer order (each base beside its DoPr variant)
    statistics.py  the intervals: cluster bootstrap over seeds and episodes, paired; t over seeds
    tables.py      results.csv, summary.md (settings from the runs), the summary over demonstration
                   counts, the replication table
    plots.py       validation loss vs success and vs return, deviation from the expert, learning curves,
                   terminal reward (base vs DoPr per base optimizer)
    files.py       write_report(DIR), write_counts_report(DIR, {count: DIR_N}),
                   write_replication_report(ORIGINAL, REPLICATE, FILE)
"""

from dopr_robot.report.files import write_counts_report, write_replication_report, write_report
from dopr_robot.report.plots import (
    plot_deviation,
    plot_learning_curves,
    plot_terminal_reward,
    plot_validation_vs_return,
    plot_validation_vs_success,
)
from dopr_robot.report.results import COLUMNS, load_rows, optimizer_order
from dopr_robot.report.statistics import cluster_bootstrap, paired_cluster_bootstrap, t_interval
from dopr_robot.report.tables import METRICS, counts_markdown, csv_text, replication_markdown, summary_markdown

__all__ = ["COLUMNS", "METRICS", "cluster_bootstrap", "counts_markdown", "csv_text", "load_rows", "optimizer_order",
           "paired_cluster_bootstrap", "plot_deviation", "plot_learning_curves", "plot_terminal_reward",
           "plot_validation_vs_return", "plot_validation_vs_success", "replication_markdown", "summary_markdown",
           "t_interval", "write_counts_report", "write_replication_report", "write_report"]
