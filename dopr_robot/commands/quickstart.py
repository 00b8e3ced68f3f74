"""dopr-robot quickstart: the toolkit's main job on its built-in default, in a few minutes on a laptop CPU.

Collects expert demonstrations of the default task, trains AdamW and DoPr-AdamW (3 seeds each, same
data, same initial weights, same settings), evaluates every run in closed loop on the same 100 seeded
episodes with the expert rolled out beside it, prints the summary table and, last, whether the paired
success difference is resolved, and writes the plots and one side-by-side video (policy | expert from the
same initial state).

Sized so that the answer is resolved: on Push-v0 the 95% interval of DoPr-AdamW - AdamW's success rate is
0.15 wide (2 seeds x 50 episodes gave 0.22; most of its width was the episodes' binomial noise, so the
episodes doubled before the seeds grew). Two cells run at once on a machine with two cores or more.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from dopr_robot.grid import add_execution_arguments
from dopr_robot.threads import machine_cores


HELP = "collect, train AdamW and DoPr-AdamW (3 seeds), evaluate, print the table, write plots and a video"

DEFAULT_TASK = "Push-v0"
# Sized to take a few minutes on 2 CPU cores; `dopr-robot compare` runs the same pipeline at any size.
# The JSON form of a CompareConfig (what `compare --config FILE.json` reads), less out and tasks.
SETTINGS = {"optimizers": ["adamw", "dopr-adamw"], "seeds": 3, "demo": {"episodes": 50},
            "train": {"steps": 1500, "batch_size": 256}, "eval": {"episodes": 100, "num_envs": 10}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.add_argument("--task", default=DEFAULT_TASK, help=f"task (default {DEFAULT_TASK})")
    parser.add_argument("--overwrite", action="store_true",
                        help="make the comparison afresh in --out when it holds one made with other settings")
    add_execution_arguments(parser, ("workers", "device", "progress"))
    # Two cells at once, one thread each: the closed-loop rollouts are single-threaded, so two
    # processes finish the grid sooner than one with two threads.
    parser.set_defaults(workers=min(2, machine_cores()))


def run(args: argparse.Namespace) -> int:
    from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
    from dopr_robot.compare import CompareConfig, check_comparison, compare
    from dopr_robot.config import config_from_dict
    from dopr_robot.evaluate.video import render
    from dopr_robot.grid import execution_from_args
    from dopr_robot.report.tables import success_in_words
    from dopr_robot.report.terminal import WIDTH, fit_markdown

    execution = execution_from_args(args)  # a device this machine lacks fails here, before any work

    config = config_from_dict(CompareConfig, {**SETTINGS, "out": args.out, "tasks": [args.task]})
    check_comparison(config, args.overwrite)  # --out refused before the plan is printed (compare checks again)
    out = Path(args.out)
    if (out / "compare_config.json").exists() and not args.overwrite:
        print(f"{out} holds this quickstart already: resuming it (finished runs are kept, missing ones run); "
              "to start over, pass --overwrite or another --out")
    print(f"quickstart: {args.task}, {config.demo.episodes} expert demonstrations, optimizers "
          f"{' and '.join(config.optimizers)} x {config.seeds} seeds,\n"
          f"  {config.train.steps} training steps each, {config.eval.episodes} closed-loop episodes per run -> {args.out}")
    rows = compare(config, progress=execution.progress, execution=execution, overwrite=args.overwrite)
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
    # The answer last, where the eye lands: is the paired difference resolved, and which way.
    print("\n" + textwrap.fill("In words: " + success_in_words(rows, *config.optimizers), WIDTH))
    return 0
