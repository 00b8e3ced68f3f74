"""Two BC trainings at once on one machine: steps/s of each against one training alone.

On a small machine, two processes whose OpenMP threads add up to more than the cores can slow each
other down many times over (worker threads spin-waiting for each other), not merely by half. The
toolkit gives every process a thread budget (``dopr_robot.threads``); this benchmark shows what it
buys. It runs, as separate processes (the way users run jobs), each configuration below and prints
each job's steps/s and its ratio to one job alone with one thread:

    alone, 1 thread              the reference
    alone, toolkit default       one job with every core free
    2 side by side, 1 thread     the toolkit's split for two jobs on two cores
    2 side by side, default      two jobs each started with the toolkit's default budget
    2 side by side, 2 threads    what plain torch does (every process takes every core)
    2 started at the same instant, default   a shell loop with ``&``: both see every core free

Side-by-side jobs are started ``--stagger`` seconds apart, except those started at the same instant.
Each job's steps/s is read two ways from its metrics.jsonl: between its first and last log points,
and from its start (the training loop's start: the last log point's step over its elapsed time, which
includes the first steps, when jobs started together have not yet split the cores); each is compared
with the same reading of one job alone with one thread.

    python benchmarks/side_by_side.py [--steps 600] [--repeats 2] [--scenarios same-instant]

Run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import demos

SCENARIOS = {  # name: (label, jobs at once, --threads: None = the toolkit's default, "torch" = plain torch, staggered)
    "alone": ("alone, 1 thread", 1, 1, True),  # the reference, always run first
    "alone-default": ("alone, toolkit default", 1, None, True),
    "one-thread": ("side by side, 1 thread each", 2, 1, True),
    "default": ("side by side, toolkit default", 2, None, True),
    "torch": ("side by side, plain torch (all cores each)", 2, "torch", True),
    "same-instant": ("started at the same instant, toolkit default", 2, None, False),
}


def job_command(data: Path, out: Path, steps: int, threads: int | str | None) -> tuple[list[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [sys.executable, "-m", "dopr_robot", "train", "--data", str(data), "--out", str(out), "--steps", str(steps),
               "--optimizer", "adamw", "--log-every", str(steps // 10), "--val-every", str(10 * steps),
               "--checkpoint-every", str(10 * steps), "--overwrite"]
    if threads == "torch":
        env["DOPR_ROBOT_THREADS"] = "all"  # opt out of the budget: torch's own default, every core
    elif threads is not None:
        command = command[:4] + ["--threads", str(threads)] + command[4:]
    return command, env


def steps_per_second(run_dir: Path) -> tuple[float, float]:
    """(between the first and last log points, from the start of the loop)."""
    timed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [line for line in timed if "elapsed_s" in line]
    between = (timed[-1]["step"] - timed[0]["step"]) / (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"])
    return between, timed[-1]["step"] / timed[-1]["elapsed_s"]


def run_scenario(data: Path, tmp: Path, jobs: int, threads, steps: int, stagger_s: float) -> list[tuple[float, float]]:
    processes, outs, commands = [], [], []
    for j in range(jobs):
        out = tmp / f"job{j}"
        commands.append(job_command(data, out, steps, threads))
        outs.append(out)
    for command, env in commands:
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(stagger_s)  # users start jobs one after another (0: at the same instant)
    for process in processes:
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"a training job failed: {err.decode()[-2000:]}")
    return [steps_per_second(out) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each scenario (each reported)")
    parser.add_argument("--stagger", type=float, default=1.0, help="seconds between starting side-by-side jobs")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of: {', '.join(SCENARIOS)} (alone is always run)")
    args = parser.parse_args()
    names = ["alone"] + [name for name in args.scenarios.split(",") if name and name != "alone"]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; valid: {', '.join(SCENARIOS)}")
    print(f"{os.cpu_count()} cores (affinity {len(os.sched_getaffinity(0))}); MLP 256x3, batch 256, AdamW, "
          f"{args.steps} steps per job; steps/s from each job's metrics.jsonl")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "reach.hdf5"
        demos.collect("Reach-v0", 20, data, seed=0, progress=False)
        reference = None
        print(f"{'scenario':<46}{'steps/s per job':>18}{'vs alone 1 thread':>19}{'from start':>14}{'vs alone':>12}")
        for name in names:
            label, jobs, threads, staggered = SCENARIOS[name]
            for _ in range(args.repeats):
                speeds = run_scenario(data, tmp, jobs, threads, args.steps, args.stagger if staggered else 0.0)
                if reference is None:
                    reference = speeds[0]
                columns = [", ".join(f"{s[k]:.0f}" for s in speeds) for k in (0, 1)]
                ratios = [", ".join(f"{s[k] / reference[k]:.2f}" for s in speeds) for k in (0, 1)]
                print(f"{label:<46}{columns[0]:>18}{ratios[0]:>19}{columns[1]:>14}{ratios[1]:>12}", flush=True)


if __name__ == "__main__":
    main()
