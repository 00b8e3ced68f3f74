"""dopr-robot optimizers: the optimizer registry, and which parameters of a model DoPr covers."""

from __future__ import annotations

import argparse

HELP = "list the optimizer registry (and DoPr's coverage of a demo model)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="show which parameters of a small demo model (mlp | attention) get AP "
                             "and which the base optimizer only")
    parser.add_argument("--base", default="adamw", help="base optimizer for the coverage table")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.optim import describe_registry
    from dopr_robot.optimizer_demo import coverage_table

    coverage = coverage_table(args.model, base=args.base) if args.model is not None else None
    print(describe_registry())
    if coverage is not None:
        print()
        print(coverage)
    return 0
