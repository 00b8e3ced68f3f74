"""The ``dopr-robot`` command line.

Each subcommand is a module of ``dopr_robot.commands`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, listed in ``COMMANDS`` below with its help line. Only the chosen command's
module is imported (its options may need torch); ``dopr-robot --help`` imports none of them.

A :class:`~dopr_robot.errors.UserError` becomes one line on stderr and exit status 2; Ctrl-C one
line saying how to resume and exit status 130; a closed stdout (``| head -1``) a quiet exit 141.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from dopr_robot import __version__, threads
from dopr_robot.errors import UserError


class Command(NamedTuple):
    module: str  # in dopr_robot.commands
    help: str  # the module's HELP (a test holds them equal), here so that --help imports no command


COMMANDS: dict[str, Command] = {
    "quickstart": Command("quickstart", "collect, train AdamW and DoPr-AdamW (3 seeds), evaluate, print the table, "
                                        "write plots and a video"),
    "optimizers": Command("optimizers", "list the optimizer registry (and DoPr's coverage of a demo model)"),
    "optimizer-demo": Command("optimizer_demo", "DoPr vs its base optimizers on regression with ill-conditioned inputs"),
    "tasks": Command("tasks", "list the tasks: observation/action sizes, horizon, expert kind, availability"),
    "expert": Command("expert", "train (resumably), export and evaluate the stable-baselines3 locomotion experts"),
    "train": Command("train", "train a BC policy (config.json, metrics.jsonl and checkpoint.pt in the run directory)"),
    "dagger": Command("dagger", "DAgger: the expert relabels the states the policy visits, aggregated over rounds (resumable)"),
    "collect": Command("collect", "run a task's expert for N seeded episodes and write them to an HDF5 file "
                                  "(robomimic layout)"),
    "inspect": Command("inspect", "describe demonstrations: an HDF5 file, a Minari dataset directory or a local "
                                  "Minari dataset id"),
    "eval": Command("eval", "roll a checkpoint's policy out on seeded episodes (and the expert from the same initial "
                            "states): success rate, return, compounding error, beside the run's validation loss"),
    "video": Command("video", "render seeded episodes of a checkpoint's policy beside the expert's (mp4 or gif)"),
    "compare": Command("compare", "train and evaluate every (task, optimizer, seed); write results.csv, summary.md "
                                  "and plots (resumable)"),
    "sweep": Command("sweep", "choose each optimizer's lr and weight decay, then DoPr's damping, by closed-loop return "
                              "on tuning seeds; write sweep.md and optimizer_settings.json (resumable)"),
}
NO_GLOBAL_THREADS = ("expert",)  # expert train has its own --threads (default 1: it runs in the background)
SIGINT_STATUS = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
SIGPIPE_STATUS = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away


def command_module(name: str):
    return importlib.import_module(f"dopr_robot.commands.{COMMANDS[name].module}")


def build_parser(commands: tuple[str, ...] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The parser, with the options of ``commands`` (each imports its module); the other commands
    are listed with their help line but take no options."""
    parser = argparse.ArgumentParser(
        prog="dopr-robot",
        description="Behavior cloning with the DoPr optimizer: demonstrations, training, closed-loop "
                    "evaluation and optimizer comparisons. Start with `dopr-robot quickstart`.")
    parser.add_argument("--version", action="version", version=f"dopr-robot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparser = sub.add_parser(name, help=command.help, description=command.help)
        if name not in commands:
            continue
        command_module(name).add_arguments(subparser)
        if name not in NO_GLOBAL_THREADS:
            subparser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                                   help="intra-op CPU threads (default: the cores free at start, adapting while it "
                                        "runs; DOPR_ROBOT_THREADS or OMP_NUM_THREADS also fix it)")
    return parser


def _chosen_command(argv: list[str]) -> tuple[str, ...]:
    """The command named on the command line: the first word that is not a top-level option (the
    top-level options take no values)."""
    words = [word for word in argv if not word.startswith("-")]
    return (words[0],) if words and words[0] in COMMANDS else ()


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_chosen_command(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        threads.configure(getattr(args, "threads", None))
        status = command_module(args.command).run(args)
        sys.stdout.flush()  # here, so that a closed stdout is caught below rather than at exit
        return status
    except UserError as err:
        print(f"dopr-robot {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(args.command, lambda args, argv: None)(args, argv)
        print(f"dopr-robot {args.command}: interrupted" + (f"; resume with: {hint}" if hint else ""), file=sys.stderr)
        return SIGINT_STATUS
    except BrokenPipeError:  # the reader of stdout went away (`| head -1`): stop quietly, as `cat` would
        _silence_stdout()
        return SIGPIPE_STATUS
    finally:
        threads.release()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (captured): nothing will flush to the pipe
        pass


def _same_command(args: argparse.Namespace, argv: list[str]) -> str:
    """Resumable commands skip what they finished: the same command line resumes them."""
    return shlex.join(["dopr-robot", *argv])


def _train_resume(args: argparse.Namespace, argv: list[str]) -> str:
    """``train --resume RUN`` once the run has a checkpoint; before that, the same command starts over."""
    if args.resume is not None:
        return _same_command(args, argv)
    from dopr_robot.checkpoint import CHECKPOINT_NAME
    from dopr_robot.config import TrainConfig, resolve_config

    out = Path(resolve_config(TrainConfig, args).out)
    if (out / CHECKPOINT_NAME).exists():
        return shlex.join(["dopr-robot", "train", "--resume", str(out)])
    return _same_command(args, argv)


def _expert_resume(args: argparse.Namespace, argv: list[str]) -> str | None:
    if args.expert_command != "train":
        return None
    return _same_command(args, argv if args.resume else [*argv, "--resume"])


# command -> how an interrupted run of it resumes (commands not listed just stop).
RESUME_HINTS: dict[str, Callable[[argparse.Namespace, list[str]], str | None]] = {
    "train": _train_resume,
    "compare": _same_command,
    "sweep": _same_command,
    "quickstart": _same_command,
    "expert": _expert_resume,
}


if __name__ == "__main__":
    sys.exit(main())
