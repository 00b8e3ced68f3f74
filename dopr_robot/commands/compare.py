"""dopr-robot compare: tasks x optimizers x seeds -> results.csv, summary.md and plots.

Every `train` option is a `compare` option with the same name (``--lr``, ``--ema-decay``,
``--optimizer-options``), applied to every cell; the evaluation options are ``--eval-*``;
``--config FILE.json`` takes the nested JSON form that ``DIR/compare_config.json`` holds
(see :mod:`dopr_robot.compare`); ``--demo-episodes 10,25,50`` runs one comparison per count;
``--remedies none,noise:0.1,dagger:3`` adds data-side remedies as a grid axis (one comparison per remedy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dopr_robot.compare import REPLICATION_DIR, REPLICATION_REPORT, CompareConfig
from dopr_robot.config import add_config_arguments, given_options
from dopr_robot.grid import add_execution_arguments, execution_from_args
from envs.seeds import REPLICATION, REPLICATION_DEMO_SEED

HELP = "train and evaluate every (task, optimizer, seed); write results.csv, summary.md and plots (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, CompareConfig)
    # --eval-num-envs's name before evaluation became a nested EvalConfig; kept working, not listed.
    parser.add_argument("--num-envs", dest="eval.num_envs", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--overwrite", action="store_true",
                        help="--out may hold a comparison made with other settings, or other files: make the comparison "
                             "afresh there (every cell trained and evaluated again, demonstrations that differ from "
                             "those asked for collected again, the report replaced; other files are kept)")
    parser.add_argument("--replicate", action="store_true",
                        help=f"rerun the finished comparison in --out with the same settings and training seeds on fresh "
                             f"demonstrations (reset seeds from {REPLICATION_DEMO_SEED:,}) and fresh evaluation episodes "
                             f"(from {REPLICATION:,}) into OUT/{REPLICATION_DIR}/; print OUT/{REPLICATION_REPORT} (resumable)")
    add_execution_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dopr_robot.compare import compare, replicate, resolve_compare_config
    from dopr_robot.errors import UserError
    from dopr_robot.report.terminal import print_report

    execution = execution_from_args(args)
    if args.replicate:
        given = given_options(CompareConfig, args)
        extra = [flag for dest, flag in given.items() if dest != "out"] + (["--config"] if args.config else []) + \
            (["--overwrite"] if args.overwrite else [])
        if extra:
            raise UserError(f"--replicate reruns the comparison saved in --out with its own settings: drop {', '.join(extra)}")
        if "out" not in given:
            raise UserError("--replicate needs --out DIR, the directory of a finished comparison")
        report = replicate(args.out, progress=not args.no_progress, execution=execution)
        print_report(report, [Path(args.out) / REPLICATION_DIR])
        return 0

    config = resolve_compare_config(args)
    compare(config, progress=not args.no_progress, execution=execution, overwrite=args.overwrite)
    out = Path(config.out)
    print_report(out / "summary.md", [out / "results.csv", *sorted(out.glob("*.png"))])
    for count in config.by_demo_count().values():
        print(f"{count.demo.episodes} demonstrations: {Path(count.out) / 'summary.md'}")
    for remedy, grid in config.by_remedy().items():
        if remedy != "none":
            print(f"remedy {remedy}: {Path(grid.out) / 'summary.md'}")
    return 0

