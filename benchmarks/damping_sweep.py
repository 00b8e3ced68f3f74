"""Choose DoPr's default damping by a sweep with the comparison harness, on evaluation seeds of its own.

    python benchmarks/damping_sweep.py --out runs/damping-sweep [--dampings 0.001,0.01,0.1,1]
        [--tasks Reach-v0,Push-v0] [--optimizer dopr-adamw] [--seeds 2] [--steps 2000]

For every damping, ``compare`` trains and evaluates ``optimizer`` on every task (the same
demonstrations for all dampings). Evaluation uses the tuning reset seeds (``envs.seeds.TUNING``,
2,000,000 ...), disjoint from the demonstrations and from the seeds reported comparisons use
(``envs.seeds.POLICY_EVAL``), so the choice never looks at the numbers it is later judged on. One damping is chosen for all tasks: the
highest success rate averaged over tasks and seeds, ties broken by the lower mean J_traj.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import demos
from dopr_robot.compare import CompareConfig, compare, train_template
from dopr_robot.config import EvalConfig
from envs import seeds

SWEEP_EVAL_SEED = seeds.TUNING


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/damping-sweep"))
    parser.add_argument("--dampings", default="0.001,0.01,0.1,1")
    parser.add_argument("--tasks", default="Reach-v0,Push-v0")
    parser.add_argument("--optimizer", default="dopr-adamw")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--demo-episodes", type=int, default=50)
    parser.add_argument("--eval-episodes", type=int, default=50)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    data = {}
    for task in tasks:
        data[task] = str(args.out / "data" / f"{task}.hdf5")
        if not Path(data[task]).exists():
            demos.collect(task, args.demo_episodes, data[task], seed=0, progress=False)

    table = []
    for damping in [float(d) for d in args.dampings.split(",")]:
        config = CompareConfig(out=str(args.out / f"damping-{damping:g}"), tasks=tasks, optimizers=[args.optimizer],
                               seeds=args.seeds, data=data, train=train_template(steps=args.steps, damping=damping),
                               eval=EvalConfig(episodes=args.eval_episodes, seed=SWEEP_EVAL_SEED))
        rows = compare(config, progress=False)
        per_task = {task: (np.mean([r["success_rate"] for r in rows if r["task"] == task]),
                           np.mean([r["j_traj"] for r in rows if r["task"] == task]),
                           np.mean([r["val_loss"] for r in rows if r["task"] == task])) for task in tasks}
        table.append((damping, per_task))
        print(f"damping {damping:g}: " + "; ".join(f"{t} success {s:.3f} J_traj {j:.1f} val {v:.4f}"
                                                  for t, (s, j, v) in per_task.items()), flush=True)

    print(f"\n| damping | " + " | ".join(f"{t} success | {t} J_traj | {t} val loss" for t in tasks) + " | mean success |")
    print("|---|" + "---|---|---|" * len(tasks) + "---|")
    for damping, per_task in table:
        cells = " | ".join(f"{s:.3f} | {j:.1f} | {v:.4f}" for s, j, v in per_task.values())
        print(f"| {damping:g} | {cells} | {np.mean([s for s, _, _ in per_task.values()]):.3f} |")
    best = max(table, key=lambda row: (np.mean([s for s, _, _ in row[1].values()]),
                                       -np.mean([j for _, j, _ in row[1].values()])))
    print(f"\nchosen damping: {best[0]:g} ({args.optimizer}, {len(tasks)} tasks x {args.seeds} seeds x "
          f"{args.eval_episodes} episodes, evaluation seeds from {SWEEP_EVAL_SEED})")


if __name__ == "__main__":
    main()
