"""dopr-robot video: a checkpoint's policy and the expert from the same initial states, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "render seeded episodes of a checkpoint's policy beside the expert's (mp4 or gif)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory or its checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="FILE.mp4 or FILE.gif")
    parser.add_argument("--task", default=None, help="task (default: the one the demos came from)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes, one after another (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="episode i is reset with seed SEED + i (default 1000000)")
    parser.add_argument("--width", type=int, default=240, help="panel width in pixels (default 240)")
    parser.add_argument("--height", type=int, default=240, help="panel height in pixels (default 240)")
    parser.add_argument("--fps", type=int, default=None, help="frames per second (default: the task's control rate)")
    parser.add_argument("--actions-per-chunk", type=int, default=1, help="actions executed per predicted chunk (default 1)")
    parser.add_argument("--no-expert", action="store_true", help="the policy alone")
    parser.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
    from dopr_robot.errors import UserError
    from dopr_robot.evaluate import DEFAULT_EVAL_SEED, checkpoint_task
    from dopr_robot.evaluate.video import SUFFIXES, record_video

    if args.out.suffix.lower() not in SUFFIXES:
        raise UserError(f"--out must end in .mp4 or .gif, got {args.out}")
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.fps is not None and args.fps < 1:
        raise UserError(f"--fps must be >= 1, got {args.fps}")
    checkpoint = load_checkpoint(args.checkpoint)
    task, env_kwargs = checkpoint_task(checkpoint, args.task)
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    video = record_video(policy_from_checkpoint(checkpoint, use_ema=not args.no_ema), task, args.out,
                         [seed + i for i in range(args.episodes)], env_kwargs=env_kwargs,
                         actions_per_chunk=args.actions_per_chunk, with_expert=not args.no_expert,
                         width=args.width, height=args.height, fps=args.fps)
    side = "policy | expert" if video["with_expert"] else "policy"
    print(f"wrote {video['path']} ({side}, {video['episodes']} episode(s), {video['frames']} frames)")
    return 0
