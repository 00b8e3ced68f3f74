"""dopr-robot collect: run a task's expert and write its demonstrations to one HDF5 file."""

from __future__ import annotations

import argparse

HELP = "run a task's expert for N seeded episodes and write them to an HDF5 file (robomimic layout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name (see `dopr-robot tasks`)")
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes")
    parser.add_argument("--out", required=True, help="output file, e.g. demos/reach.hdf5")
    parser.add_argument("--seed", type=int, default=0, help="episode i is reset with seed SEED + i (default 0)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="std of Gaussian noise added to the executed action (clipped to the bounds); the "
                             "recorded label stays the clean expert action (default 0: no noise)")
    parser.add_argument("--success-only", action="store_true",
                        help="keep only successful episodes: attempt seeds SEED, SEED + 1, ... until --episodes "
                             "succeed (the file records how many were dropped, and their seeds)")
    parser.add_argument("--max-attempts", type=int, default=None,
                        help="with --success-only: give up (error, no file) after this many episodes "
                             "(default 3 * EPISODES + 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from demos import collect
    from dopr_robot import __version__

    result = collect(args.task, args.episodes, args.out, seed=args.seed, noise=args.noise, overwrite=args.overwrite,
                     success_only=args.success_only, max_attempts=args.max_attempts,
                     progress=not args.no_progress, version=__version__)
    print(result)
    return 0
