"""The ``dopr-robot`` command line.

Each subcommand is a pair (``add_arguments(parser)``, ``run(args) -> int``) in the ``COMMANDS``
registry below. A :class:`~dopr_robot.errors.UserError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from dopr_robot import __version__
from dopr_robot.errors import UserError

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _optimizers_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="show which parameters of a small demo model (mlp | attention) get AP and which the "
        "base optimizer only",
    )
    parser.add_argument("--base", default="adamw", help="base optimizer for the coverage table")


def _optimizers_run(args: argparse.Namespace) -> int:
    from dopr_robot.optim import describe_registry
    from dopr_robot.optimizer_demo import coverage_table

    coverage = coverage_table(args.model, base=args.base) if args.model is not None else None
    print(describe_registry())
    if coverage is not None:
        print()
        print(coverage)
    return 0


def _demo_args(parser: argparse.ArgumentParser) -> None:
    from dopr_robot.optimizer_demo import add_demo_arguments

    add_demo_arguments(parser)


def _demo_run(args: argparse.Namespace) -> int:
    from dopr_robot.optimizer_demo import run_demo

    return run_demo(args)


# name -> (help, add_arguments, run). Later subcommands (tasks, collect, train, eval, ...) go here.
COMMANDS: dict[str, Command] = {
    "optimizers": ("list the optimizer registry (and DoPr coverage of a model)", _optimizers_args, _optimizers_run),
    "optimizer-demo": ("DoPr vs its base on ill-conditioned regression", _demo_args, _demo_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dopr-robot", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dopr-robot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command][2](args)
    except UserError as err:
        print(f"dopr-robot {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
