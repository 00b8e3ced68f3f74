"""dopr-robot compare: tasks x optimizers x seeds -> results.csv, summary.md and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from dopr_robot.compare import CompareConfig
from dopr_robot.config import add_config_arguments, resolve_config

HELP = "train and evaluate every (task, optimizer, seed); write results.csv, summary.md and plots (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, CompareConfig)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.compare import compare

    config = resolve_config(CompareConfig, args)
    compare(config, progress=not args.no_progress)
    out = Path(config.out)
    print((out / "summary.md").read_text())
    print(f"results: {out / 'results.csv'}, {out / 'summary.md'}; plots: "
          f"{', '.join(str(p) for p in sorted(out.glob('*.png')))}")
    return 0
