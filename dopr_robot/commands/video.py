"""dopr-robot video: a checkpoint's policy and the expert from the same initial states, side by side."""

from __future__ import annotations

import argparse
from dataclasses import replace

from dopr_robot.config import EvalConfig, add_config_arguments, resolve_config
from dopr_robot.evaluate.video import render
from dopr_robot.grid import add_execution_arguments

HELP = "render seeded episodes of a checkpoint's policy beside the expert's (mp4 or gif)"

# The evaluation options, with this command's defaults; a video steps one env at a time.
DEFAULTS = {"episodes": 2}
EXCLUDE = ("num_envs",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory or its checkpoint.pt")
    parser.add_argument("--out", required=True, help="FILE.mp4 or FILE.gif (an existing file only with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--task", default=None, help="task (default: the one the demos came from)")
    add_config_arguments(parser, EvalConfig, exclude=EXCLUDE, defaults=DEFAULTS)
    parser.add_argument("--width", type=int, default=None, help="panel width in pixels (the W of --size)")
    parser.add_argument("--height", type=int, default=None, help="panel height in pixels (the H of --size)")
    add_execution_arguments(parser, ("device",))


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
    from dopr_robot.evaluate import checkpoint_task
    from dopr_robot.evaluate.video import check_video_destination

    settings = resolve_config(EvalConfig, args, exclude=EXCLUDE, defaults=DEFAULTS)
    if args.width is not None or args.height is not None:
        width, height = settings.size
        settings = replace(settings, size=(args.width or width, args.height or height))
    out = check_video_destination(args.out, overwrite=args.overwrite)  # before any rollout
    checkpoint = load_checkpoint(args.checkpoint)
    task, env_kwargs = checkpoint_task(checkpoint, args.task)
    video = render(policy_from_checkpoint(checkpoint, use_ema=settings.use_ema, device=args.device,
                                                flow_steps=settings.flow_steps), task, out, settings,
                   env_kwargs=env_kwargs, obs_keys=(checkpoint.get("dataset") or {}).get("obs_keys") or ())
    side = "policy | expert" if video["with_expert"] else "policy"
    print(f"wrote {video['path']} ({side}, {video['episodes']} episode(s), {video['frames']} frames)")
    return 0
