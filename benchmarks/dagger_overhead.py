"""DAgger's overhead beyond the training it asks for: one round's wall time on a task, split into the
learner's rollout (env steps and policy), relabelling (the expert's calls on every visited state) plus
aggregation (the round's HDF5 written), and training.

Round 0 trains briefly on freshly collected demonstrations (only to have a policy to roll out); the
numbers are those of each later round, from its ``done.json``. Target: relabelling + aggregation at
most 10% of a round.

    OMP_NUM_THREADS=1 python benchmarks/dagger_overhead.py                     # Push-v0, 2 rounds
    OMP_NUM_THREADS=1 python benchmarks/dagger_overhead.py --episodes-per-round 20 --steps-per-round 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from dopr_robot import threads
from dopr_robot.collect_config import CollectConfig
from dopr_robot.dagger import DaggerConfig, dagger, train_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Push-v0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--demos", type=int, default=20, help="initial demonstrations")
    parser.add_argument("--episodes-per-round", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads.configure(args.threads)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        config = DaggerConfig(out=str(Path(tmp) / "dagger"), task=args.task, rounds=args.rounds,
                              episodes_per_round=args.episodes_per_round, steps_per_round=args.steps_per_round,
                              demo=CollectConfig(episodes=args.demos),
                              train=train_template(steps=50, batch_size=args.batch_size))
        result = dagger(config, progress=False, device="cpu")
    print(f"{args.task}: {args.episodes_per_round} episodes and {args.steps_per_round} steps (batch {args.batch_size}) "
          "per round")
    print(f"{'round':>5} {'rollout s':>10} {'relabel s':>10} {'aggregate s':>12} {'train s':>8} {'overhead':>9}")
    for record in result.rounds[1:]:
        s = record["seconds"]
        total = sum(s.values())
        overhead = (s["relabel"] + s["aggregate"]) / total
        print(f"{record['round']:>5} {s['rollout']:>10.2f} {s['relabel']:>10.3f} {s['aggregate']:>12.3f} "
              f"{s['train']:>8.2f} {100 * overhead:>8.1f}%")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
