"""dopr-robot eval: closed-loop success, return and compounding error of a trained policy, with intervals."""

from __future__ import annotations

import argparse

from dopr_robot.config import EvalConfig, add_config_arguments, resolve_config
from dopr_robot.grid import add_execution_arguments

HELP = ("roll a checkpoint's policy out on seeded episodes (and the expert from the same initial states): "
        "success rate, return, compounding error, beside the run's validation loss")

# The evaluation options (EvalConfig), with this command's defaults.
DEFAULTS = {"num_envs": 16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory or its checkpoint.pt")
    parser.add_argument("--task", default=None, help="task to evaluate on (default: the one the demos came from)")
    parser.add_argument("--out", default=None,
                        help="result JSON (default: eval.json in the run directory); an evaluation that eval wrote "
                             "there before is replaced, anything else only with --overwrite")
    add_config_arguments(parser, EvalConfig, defaults=DEFAULTS)
    add_execution_arguments(parser, ("device", "progress"))
    parser.add_argument("--videos", type=int, default=0, metavar="V",
                        help="also save the first V episodes as a video (OUT with .mp4; --size, --fps)")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="draw the deviation curve and the on-policy vs on-expert action error (a plot eval "
                             "drew there before is replaced, anything else only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out, --plot and the video even when they hold something else (a comparison "
                             "cell's evaluation, demonstrations, any other file)")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import checkpoint_path
    from dopr_robot.errors import UserError
    from dopr_robot.evaluate import check_eval_destination, evaluate_checkpoint, write_json
    from dopr_robot.evaluate.plots import check_plot_destination
    from dopr_robot.evaluate.video import check_video_destination

    settings = resolve_config(EvalConfig, args, defaults=DEFAULTS)
    if args.videos < 0:
        raise UserError(f"--videos must be >= 0, got {args.videos}")
    if args.plot is not None and not settings.with_expert:
        raise UserError("--plot draws the compounding error, which needs the expert: drop --no-expert")
    # Every destination is checked before the rollouts, so a bad path costs nothing.
    out = args.out if args.out is not None else checkpoint_path(args.checkpoint).parent / "eval.json"
    out = check_eval_destination(out, overwrite=args.overwrite)
    plot = None if args.plot is None else check_plot_destination(args.plot, overwrite=args.overwrite)
    if args.videos > 0:
        if out.suffix.lower() == ".mp4":
            raise UserError(f"--videos writes {out}, the same file as --out; give --out a .json name")
        check_video_destination(out.with_suffix(".mp4"), overwrite=args.overwrite)
    result = evaluate_checkpoint(args.checkpoint, settings, task=args.task, device=args.device,
                                 progress=not args.no_progress)
    data = result.to_dict()
    write_json(data, out)
    print(result.table())
    print(f"wrote {out}")
    if plot is not None:
        from dopr_robot.evaluate.plots import plot_compounding

        print(f"wrote {plot_compounding(data, plot)}")
    if args.videos > 0:
        from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
        from dopr_robot.evaluate.video import render

        checkpoint = load_checkpoint(args.checkpoint)
        video = render(policy_from_checkpoint(checkpoint, use_ema=settings.use_ema, device=args.device,
                                                   flow_steps=settings.flow_steps), result.task,
                       out.with_suffix(".mp4"), settings, episodes=args.videos, env_kwargs=result.env_kwargs,
                       obs_keys=checkpoint["dataset"]["obs_keys"])
        print(f"wrote {video['path']} ({video['episodes']} episode(s), {video['frames']} frames)")
    return 0
