"""Expert success rates and env speed for every available task.

For each task: the expert's success rate over seeded episodes (success = ``info["is_success"]`` on
the final step; seeds ``seed_start + i``), a Wilson 95% interval, the mean per-step action change
(a smoothness check: bang-bang experts score high), and single-env steps/s under random actions
and under the expert (one ``act`` call per step included).

    python benchmarks/expert_success.py                      # all available tasks, 100 episodes
    python benchmarks/expert_success.py --tasks Reach-v0 Push-v0 --episodes 20
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

import envs


@dataclass(frozen=True)
class TaskResult:
    name: str
    episodes: int
    successes: int
    mean_action_change: float
    random_steps_per_s: float
    expert_steps_per_s: float


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (sensible at 0% and 100%, unlike the normal one)."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z**2 / trials
    centre = (rate + z**2 / (2 * trials)) / denominator
    half_width = z * math.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def random_steps_per_second(name: str, steps: int, seed: int) -> float:
    """Steps/s of one env under uniformly random actions, resetting at episode ends."""
    env = envs.make(name)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def evaluate_expert(name: str, episodes: int, seed_start: int, random_steps: int) -> TaskResult:
    """Run the expert for ``episodes`` seeded episodes of task ``name``."""
    env, expert = envs.make(name), envs.make_expert(name)
    successes, total_steps, action_changes = 0, 0, []
    start = time.perf_counter()
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed_start + episode)
        previous_action, done, info = None, False, {}
        while not done:
            action = expert.act(obs)
            if previous_action is not None:
                action_changes.append(float(np.abs(action - previous_action).max()))
            previous_action = action
            obs, _, terminated, truncated, info = env.step(action)
            total_steps += 1
            done = terminated or truncated
        successes += bool(info["is_success"])
    elapsed = time.perf_counter() - start
    env.close()
    return TaskResult(
        name=name,
        episodes=episodes,
        successes=successes,
        mean_action_change=float(np.mean(action_changes)) if action_changes else float("nan"),
        random_steps_per_s=random_steps_per_second(name, random_steps, seed_start),
        expert_steps_per_s=total_steps / elapsed,
    )


def format_table(results: list[TaskResult]) -> str:
    header = ("task", "episodes", "success", "95% CI", "mean|da|", "steps/s random", "steps/s expert")
    rows = [header]
    for result in results:
        low, high = wilson_interval(result.successes, result.episodes)
        rows.append(
            (
                result.name,
                str(result.episodes),
                f"{result.successes / result.episodes:.2f}",
                f"[{low:.2f}, {high:.2f}]",
                f"{result.mean_action_change:.3f}",
                f"{result.random_steps_per_s:,.0f}",
                f"{result.expert_steps_per_s:,.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="task names (default: every available task)")
    parser.add_argument("--episodes", type=int, default=100, help="seeded episodes per task")
    parser.add_argument("--seed-start", type=int, default=0, help="episode i uses seed seed_start + i")
    parser.add_argument("--random-steps", type=int, default=3000, help="steps for the random-action speed")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")

    names = args.tasks or [name for name in envs.list_tasks() if envs.task_spec(name).available]
    skipped = [] if args.tasks else [envs.task_spec(n) for n in envs.list_tasks() if not envs.task_spec(n).available]
    results = []
    for name in names:
        spec = envs.task_spec(name)  # unknown names raise UserError listing the valid ones
        if not spec.available:
            print(f"skipping {name}: {spec.unavailable_reason}", file=sys.stderr)
            continue
        results.append(evaluate_expert(name, args.episodes, args.seed_start, args.random_steps))
        print(f"done {name}", file=sys.stderr, flush=True)

    print(format_table(results))
    for spec in skipped:
        print(f"not run: {spec.name} ({spec.unavailable_reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
