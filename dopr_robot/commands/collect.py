"""dopr-robot collect: run a task's expert and write its demonstrations to one HDF5 file.

``--episodes``, ``--seed``, ``--noise``, ``--success-only``, ``--max-attempts``, ``--cameras`` and
``--image-size`` are the fields of
:class:`~dopr_robot.collect_config.CollectConfig`, the same config a comparison collects with
(``compare --demo-episodes``, ``--demo-success-only``, ...).
"""

from __future__ import annotations

import argparse

from dopr_robot.collect_config import CollectConfig
from dopr_robot.config import add_config_arguments, given_options, resolve_config
from dopr_robot.grid import add_execution_arguments

HELP = "run a task's expert for N seeded episodes and write them to an HDF5 file (robomimic layout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name (see `dopr-robot tasks`)")
    parser.add_argument("--out", required=True, help="output file, e.g. demos/reach.hdf5")
    # --episodes has no default here (a file is written for the count asked): none shown in the help.
    add_config_arguments(parser, CollectConfig, defaults={"episodes": None}, config_file=False)
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_execution_arguments(parser, ("progress",))


def run(args: argparse.Namespace) -> int:
    from demos import collect
    from dopr_robot import __version__
    from dopr_robot.errors import UserError

    if "episodes" not in given_options(CollectConfig, args):
        raise UserError("the following argument is required: --episodes N (the number of episodes to write)")
    config = resolve_config(CollectConfig, args)
    if isinstance(config.episodes, list):
        raise UserError(f"--episodes: collect writes one file, give one count (got {','.join(map(str, config.episodes))})")
    result = collect(args.task, out=args.out, overwrite=args.overwrite, progress=not args.no_progress, version=__version__,
                     **config.collect_arguments())
    print(result)
    return 0
