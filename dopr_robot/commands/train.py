"""dopr-robot train: behavior cloning from demonstrations, any policy, any optimizer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dopr_robot.config import TrainConfig, add_config_arguments, resolve_config
from dopr_robot.devices import add_device_argument
from dopr_robot.errors import UserError

HELP = "train a BC policy (config.json, metrics.jsonl and checkpoint.pt in the run directory)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TrainConfig)
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint, with its saved config")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    add_device_argument(parser)  # not a config field: a run resumes on another device
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.train import train

    if args.resume is not None:
        saved = args.resume / "config.json"
        if not saved.exists():
            raise UserError(f"cannot resume: {saved} does not exist")
        given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k != "out"}
        base = json.loads(saved.read_text())
        changed = sorted(k for k, v in given.items() if base.get(k) != v)
        if changed:
            raise UserError(f"--resume continues the saved config; drop {', '.join('--' + c.replace('_', '-') for c in changed)} "
                            "or start a new run directory")
        config = TrainConfig(**{**base, "out": str(args.resume)})
    else:
        config = resolve_config(TrainConfig, args)
        _check_dopr_options(config)
    result = train(config, resume=args.resume is not None, overwrite=args.overwrite, progress=not args.no_progress,
                   device=args.device)
    val = f"{result.final_val_loss:.5f}" if result.final_val_loss is not None else "n/a (no validation episodes)"
    print(f"trained {result.step} steps: train loss {result.final_train_loss:.5f}, validation loss {val}")
    print(f"run directory: {result.run_dir}")
    return 0


def _check_dopr_options(config: TrainConfig) -> None:
    """A single run given DoPr's own options on a plain optimizer: say so (a grid applies them to its
    dopr-* cells only, so the config itself accepts them)."""
    from dopr_robot.optim import is_dopr
    from dopr_robot.optim.registry import DOPR_ONLY_ARGUMENTS

    misplaced = sorted(set(config.optimizer_options) & set(DOPR_ONLY_ARGUMENTS))
    if misplaced and not is_dopr(config.optimizer):
        raise UserError(f"--optimizer-options {', '.join(misplaced)}: "
                        f"{'a DoPr option' if len(misplaced) == 1 else 'DoPr options'} that --optimizer "
                        f"{config.optimizer} would ignore; use --optimizer dopr-{config.optimizer} or drop it")
