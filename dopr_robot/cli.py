"""The ``dopr-robot`` command line.

Each subcommand is a module of ``dopr_robot.commands`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, listed in ``COMMANDS`` below. A :class:`~dopr_robot.errors.UserError` becomes
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dopr_robot import __version__, threads
from dopr_robot.errors import UserError

# subcommand -> module in dopr_robot.commands (imported only when needed, so --help stays fast).
COMMANDS: dict[str, str] = {
    "quickstart": "quickstart",
    "optimizers": "optimizers",
    "optimizer-demo": "optimizer_demo",
    "tasks": "tasks",
    "expert": "expert",
    "train": "train",
    "collect": "collect",
    "inspect": "inspect",
    "eval": "eval",
    "video": "video",
    "compare": "compare",
    "sweep": "sweep",
}


def _command_module(name: str):
    return importlib.import_module(f"dopr_robot.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dopr-robot",
        description="Behavior cloning with the DoPr optimizer: demonstrations, training, closed-loop "
                    "evaluation and optimizer comparisons. Start with `dopr-robot quickstart`.")
    parser.add_argument("--version", action="version", version=f"dopr-robot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _command_module(name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        if name != "expert":  # expert train has its own --threads (default 1: it runs in the background)
            command.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                                 help="intra-op CPU threads (default: the cores free at start, adapting while it "
                                      "runs; DOPR_ROBOT_THREADS or OMP_NUM_THREADS also fix it)")
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        threads.configure(getattr(args, "threads", None))
        return _command_module(args.command).run(args)
    except UserError as err:
        print(f"dopr-robot {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        threads.release()


if __name__ == "__main__":
    sys.exit(main())
