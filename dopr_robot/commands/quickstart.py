"""dopr-robot quickstart: the toolkit's main job on its built-in default, in a few minutes on a laptop CPU.

Collects expert demonstrations of the default task, trains AdamW and DoPr-AdamW (2 seeds each, same
data, same initial weights, same settings), evaluates every run in closed loop on the same 50 seeded
episodes with the expert rolled out beside it, prints the summary table, and writes the plots and one
side-by-side video (policy | expert from the same initial state).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dopr_robot.grid import add_execution_arguments


HELP = "collect, train AdamW and DoPr-AdamW (2 seeds), evaluate, print the table, write plots and a video"

DEFAULT_TASK = "Push-v0"
# Sized to take a few minutes on 2 CPU cores; `dopr-robot compare` runs the same pipeline at any size.
# The JSON form of a CompareConfig (what `compare --config FILE.json` reads), less out and tasks.
SETTINGS = {"optimizers": ["adamw", "dopr-adamw"], "seeds": 2, "demo": {"episodes": 50},
            "train": {"steps": 1500, "batch_size": 256}, "eval": {"episodes": 50, "num_envs": 10}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task (default {DEFAULT_TASK})")
    add_execution_arguments(parser, ("device", "progress"))


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
    from dopr_robot.compare import CompareConfig, check_comparison, compare
    from dopr_robot.config import config_from_dict
    from dopr_robot.devices import resolve_device
    from dopr_robot.evaluate.video import render
    from dopr_robot.grid import Execution
    from dopr_robot.report.terminal import fit_markdown

    resolve_device(args.device)  # a device this machine lacks fails before any work

    config = config_from_dict(CompareConfig, {**SETTINGS, "out": args.out, "tasks": [args.task]})
    check_comparison(config)  # --out refused before the plan is printed (compare checks again before its work)
    print(f"quickstart: {args.task}, {config.demo.episodes} expert demonstrations, optimizers "
          f"{' and '.join(config.optimizers)} x {config.seeds} seeds,\n"
          f"  {config.train.steps} training steps each, {config.eval.episodes} closed-loop episodes per run -> {args.out}")
    compare(config, progress=not args.no_progress, execution=Execution(device=args.device))
    out = Path(args.out)
    print(fit_markdown((out / "summary.md").read_text()))

    run_dir = out / "runs" / args.task / "dopr-adamw" / "seed0"
    video = render(policy_from_checkpoint(load_checkpoint(run_dir), device=args.device), args.task, out / "rollout.mp4",
                   config.eval, episodes=1)
    print("wrote:")
    for path in [out / "summary.md", out / "results.csv", *sorted(out.glob("*.png")), Path(video["path"])]:
        print(f"  {path}")
    print(f"runs (config, metrics, checkpoint, eval.json): {out / 'runs' / args.task}")
    print(f"next: dopr-robot eval --checkpoint {run_dir} --plot compounding.png")
    print("      dopr-robot compare --help")
    return 0
