"""dopr-robot inspect: describe a demonstration dataset (what training would load from it), with
every image key of the file: its per-step shape, dtype and size on disk."""

from __future__ import annotations

import argparse

HELP = "describe demonstrations: an HDF5 file, a Minari dataset directory or a local Minari dataset id"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="HDF5 file (from `dopr-robot collect` or robomimic layout), "
                                       "Minari dataset directory, or local Minari dataset id")
    parser.add_argument("--obs-keys", default=None,
                        help="comma-separated observation keys: low-dimensional ones are concatenated in order, "
                             "<camera>_image keys loaded as images (default: flat in files from collect, else "
                             "every low-dimensional key, sorted)")


def run(args: argparse.Namespace) -> int:
    from demos import load

    print(load(args.source, obs_keys=args.obs_keys).summary())
    return 0
