"""Throughput of ``demos.collect`` (transitions/s), with and without noise injection, per task.

For each task and noise level, interleaved over ``--repeats`` runs (medians reported): ``collect``
end to end (env + expert + HDF5 writing into a temporary directory) and the bare rollout loop
(``env.step(expert.act(obs))`` with the same noise, nothing recorded), whose ratio is the cost of
recording and writing; then ``demos.load`` of the file written. Last, on that file: batches/s of
``windows(history=2, chunk=8)`` through a DataLoader, item-wise and with a batch sampler.

    python benchmarks/collect_speed.py                               # Reach-v0 and Push-v0, 20 episodes
    python benchmarks/collect_speed.py --tasks Reach-v0 --episodes 50 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

import demos
import envs
from demos.collector import NOISE_STREAM


def bare_rollout_steps_per_s(task: str, episodes: int, seed: int, noise: float) -> float:
    """Steps/s of the expert-driven loop (same noise, same seeds) with nothing recorded."""
    env, expert = envs.make(task), envs.make_expert(task)
    steps = 0
    start = time.perf_counter()
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        rng = np.random.default_rng([seed + i, NOISE_STREAM])
        while True:
            action = expert.act(obs)
            if noise > 0:
                action = np.clip(action + noise * rng.standard_normal(action.shape), -1.0, 1.0)
            obs, _, terminated, truncated, _ = env.step(action.astype(np.float32))
            steps += 1
            if terminated or truncated:
                break
    return steps / (time.perf_counter() - start)


def batches_per_s(loader: DataLoader, seconds: float = 1.0) -> float:
    batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in loader:
            batches += 1
    return batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["Reach-v0", "Push-v0"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.1, help="noise level of the 'noise on' rows")
    parser.add_argument("--seed", type=int, default=50_000, help="benchmark seeds start here (disjoint from tests)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"{args.episodes} episodes per run, medians of {args.repeats} interleaved runs; seeds from {args.seed}")
    header = (f"{'task':<10} {'noise':>5} {'collect trans/s':>16} {'bare loop steps/s':>18} {'recording cost':>15} "
              f"{'load trans/s':>13} {'file MB':>8}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demos.hdf5"
        for task in args.tasks:
            for noise in (0.0, args.noise):
                collect_rates, bare_rates = [], []
                for _ in range(args.repeats):
                    result = demos.collect(task, args.episodes, path, seed=args.seed, noise=noise,
                                           overwrite=True, progress=False)
                    collect_rates.append(result.transitions / result.seconds)
                    bare_rates.append(bare_rollout_steps_per_s(task, args.episodes, args.seed, noise))
                collect_rate, bare_rate = statistics.median(collect_rates), statistics.median(bare_rates)
                start = time.perf_counter()
                dataset = demos.load(path)
                load_rate = dataset.num_transitions / (time.perf_counter() - start)
                print(f"{task:<10} {noise:>5.2f} {collect_rate:>16,.0f} {bare_rate:>18,.0f} "
                      f"{100 * (bare_rate / collect_rate - 1):>14.1f}% {load_rate:>13,.0f} "
                      f"{path.stat().st_size / 1e6:>8.2f}")

        windows = dataset.windows("train", history=2, chunk=8)
        generator = torch.Generator().manual_seed(0)
        itemwise = batches_per_s(DataLoader(windows, batch_size=256, shuffle=True, generator=generator))
        sampler = BatchSampler(RandomSampler(windows, generator=generator), 256, drop_last=False)
        batched = batches_per_s(DataLoader(windows, batch_size=None, sampler=sampler))
        print(f"\nwindows(history=2, chunk=8) of {task}, {len(windows)} items, batches of 256 per second: "
              f"DataLoader(batch_size=256) {itemwise:,.0f}, DataLoader(batch_size=None, sampler=BatchSampler) "
              f"{batched:,.0f}")


if __name__ == "__main__":
    main()
