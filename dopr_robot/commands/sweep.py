"""dopr-robot sweep: each base optimizer's learning rate and weight decay, then DoPr-X's damping at
X's choice, chosen by mean closed-loop return on the tuning seeds (:mod:`dopr_robot.sweep`).

The grid every setting runs is a comparison: compare's options (``--tasks``, ``--seeds``,
``--demo-episodes``, every ``train`` option, ``--eval-*``), and ``--config FILE.json`` takes a compare
config, e.g. an experiment's file; the sweep's own options are ``--bases``, ``--lrs``,
``--weight-decays`` and ``--dampings``. It writes OUT/sweep.md and OUT/optimizer_settings.json, which
``compare --optimizer-settings`` takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dopr_robot.compare import CompareConfig, resolve_compare_config
from dopr_robot.config import add_config_arguments, config_from_dict, config_to_dict, flags_named, given_options
from dopr_robot.grid import add_execution_arguments, execution_from_args
from dopr_robot.sweep import REPORT_FILE, SETTINGS_FILE, SweepConfig

HELP = ("choose each optimizer's lr and weight decay, then DoPr's damping, by closed-loop return on tuning seeds; "
        "write sweep.md and optimizer_settings.json (resumable)")

# What the sweep decides: the optimizers (a --config file's give the default --bases), their settings,
# and the values it tries (--lrs, --weight-decays, --dampings; a --config file's lr etc. are replaced).
GRID_EXCLUDE = ("optimizers", "optimizer_settings", "train.lr", "train.weight_decay", "train.damping")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, CompareConfig, exclude=GRID_EXCLUDE)
    add_config_arguments(parser.add_argument_group("sweep"), SweepConfig, exclude=("grid",), config_file=False)
    add_execution_arguments(parser)


def resolve_sweep_config(args: argparse.Namespace) -> SweepConfig:
    """The grid as compare resolves it (--config file < options), and the sweep's own options."""
    grid = resolve_compare_config(args, exclude=GRID_EXCLUDE)
    values = {dest: getattr(args, dest) for dest in given_options(SweepConfig, args, exclude=("grid",))}
    with flags_named(SweepConfig):
        return config_from_dict(SweepConfig, {**values, "grid": config_to_dict(grid, exclude=("optimizer_settings",))})


def run(args: argparse.Namespace) -> int:
    from dopr_robot.report.terminal import print_report
    from dopr_robot.sweep import sweep

    config = resolve_sweep_config(args)
    sweep(config, progress=not args.no_progress, execution=execution_from_args(args))
    out = Path(config.grid.out)
    print_report(out / REPORT_FILE)
    print(f"chosen: {out / SETTINGS_FILE}")
    print(f"  (use it with `dopr-robot compare --optimizer-settings {out / SETTINGS_FILE} ...`)")
    return 0
