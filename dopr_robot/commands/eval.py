"""dopr-robot eval: closed-loop success, return and compounding error of a trained policy, with intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("roll a checkpoint's policy out on seeded episodes (and the expert from the same initial states): "
        "success rate, return, compounding error, beside the run's validation loss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR", help="run directory or its checkpoint.pt")
    parser.add_argument("--task", default=None, help="task to evaluate on (default: the one the demos came from)")
    parser.add_argument("--episodes", type=int, default=50, help="number of episodes (default 50)")
    parser.add_argument("--num-envs", type=int, default=16, help="environments stepped together (default 16)")
    parser.add_argument("--seed", type=int, default=None,
                        help="episode i is reset with seed SEED + i (default 1000000, clear of collect's seeds)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default: eval.json in the run directory)")
    parser.add_argument("--no-expert", action="store_true", help="skip the expert rollouts and compounding error")
    parser.add_argument("--actions-per-chunk", type=int, default=1,
                        help="actions executed from each predicted chunk before re-planning (default 1, <= chunk)")
    parser.add_argument("--videos", type=int, default=0, metavar="V",
                        help="also save the first V episodes as a video (OUT with .mp4)")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw the deviation curve and the on-policy vs on-expert action error")
    parser.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import checkpoint_path
    from dopr_robot.errors import UserError
    from dopr_robot.evaluate import DEFAULT_EVAL_SEED, evaluate_checkpoint, write_json

    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.num_envs < 1:
        raise UserError(f"--num-envs must be >= 1, got {args.num_envs}")
    if args.videos < 0:
        raise UserError(f"--videos must be >= 0, got {args.videos}")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise UserError(f"--plot must be a .png file, got {args.plot}")
    if args.plot is not None and args.no_expert:
        raise UserError("--plot draws the compounding error, which needs the expert: drop --no-expert")
    seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
    out = args.out if args.out is not None else checkpoint_path(args.checkpoint).parent / "eval.json"
    result = evaluate_checkpoint(args.checkpoint, task=args.task, use_ema=not args.no_ema, episodes=args.episodes,
                                 seed=seed, num_envs=args.num_envs, actions_per_chunk=args.actions_per_chunk,
                                 with_expert=not args.no_expert, progress=not args.no_progress)
    data = result.to_dict()
    write_json(data, out)
    print(result.table())
    print(f"wrote {out}")
    if args.plot is not None:
        from dopr_robot.evaluate.plots import plot_compounding

        print(f"wrote {plot_compounding(data, args.plot)}")
    if args.videos > 0:
        from dopr_robot.checkpoint import policy_from_checkpoint
        from dopr_robot.checkpoint import load_checkpoint
        from dopr_robot.evaluate.video import record_video

        checkpoint = load_checkpoint(args.checkpoint)
        video = record_video(policy_from_checkpoint(checkpoint, use_ema=not args.no_ema), result.task,
                             out.with_suffix(".mp4"), [seed + i for i in range(min(args.videos, args.episodes))],
                             env_kwargs=result.env_kwargs, actions_per_chunk=args.actions_per_chunk,
                             with_expert=not args.no_expert)
        print(f"wrote {video['path']} ({video['episodes']} episode(s), {video['frames']} frames)")
    return 0
