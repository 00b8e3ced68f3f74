"""dopr-robot eval: closed-loop success, return and compounding error of a trained policy, with intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from dopr_robot.config import EvalConfig, add_config_arguments, resolve_config
from dopr_robot.devices import add_device_argument

HELP = ("roll a checkpoint's policy out on seeded episodes (and the expert from the same initial states): "
        "success rate, return, compounding error, beside the run's validation loss")

# The evaluation options (EvalConfig), with this command's defaults.
DEFAULTS = {"num_envs": 16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory or its checkpoint.pt")
    parser.add_argument("--task", default=None, help="task to evaluate on (default: the one the demos came from)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default: eval.json in the run directory)")
    add_config_arguments(parser, EvalConfig, defaults=DEFAULTS)
    add_device_argument(parser)
    parser.add_argument("--videos", type=int, default=0, metavar="V",
                        help="also save the first V episodes as a video (OUT with .mp4; --size, --fps)")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw the deviation curve and the on-policy vs on-expert action error")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import checkpoint_path
    from dopr_robot.errors import UserError
    from dopr_robot.evaluate import evaluate_checkpoint, write_json

    settings = resolve_config(EvalConfig, args, defaults=DEFAULTS)
    if args.videos < 0:
        raise UserError(f"--videos must be >= 0, got {args.videos}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UserError(f"--plot must be a .png file, got {args.plot}")
    if args.plot is not None and not settings.with_expert:
        raise UserError("--plot draws the compounding error, which needs the expert: drop --no-expert")
    out = args.out if args.out is not None else checkpoint_path(args.checkpoint).parent / "eval.json"
    result = evaluate_checkpoint(args.checkpoint, settings, task=args.task, device=args.device,
                                 progress=not args.no_progress)
    data = result.to_dict()
    write_json(data, out)
    print(result.table())
    print(f"wrote {out}")
    if args.plot is not None:
        from dopr_robot.evaluate.plots import plot_compounding

        print(f"wrote {plot_compounding(data, args.plot)}")
    if args.videos > 0:
        from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
        from dopr_robot.commands.video import render

        checkpoint = load_checkpoint(args.checkpoint)
        video = render(policy_from_checkpoint(checkpoint, use_ema=settings.use_ema, device=args.device,
                                                   flow_steps=settings.flow_steps), result.task,
                       out.with_suffix(".mp4"), settings, episodes=args.videos, env_kwargs=result.env_kwargs)
        print(f"wrote {video['path']} ({video['episodes']} episode(s), {video['frames']} frames)")
    return 0
