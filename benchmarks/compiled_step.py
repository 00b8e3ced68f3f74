"""Training steps/s of the BC loop, eager against ``--compile``, for AdamW and DoPr-AdamW (exact and amortized).

    python benchmarks/compiled_step.py [--steps 300] [--policies mlp,transformer,pixels] [--threads 2]
                                       [--devices cpu,cuda] [--modes eager,compiled,captured] [--repeats 3]
    python benchmarks/compiled_step.py --blocks 8 --threads 1   # the CPU MLP step alone, in interleaved blocks

Each row is one ``train()`` run with the default policy sizes: MLP 256x3 and transformer (d_model 128,
4 layers, history 8, chunk 4) at batch 256 on Reach-v0 demonstrations (collected once into a temporary
directory); ``pixels``, the MLP with the default conv encoder on a 64x64 camera image and a 12-d state
at batch 64, on random images (the step's cost does not depend on their content, and nothing renders).
Timed from the run's own metrics between its first and last log points: the first interval, which pays
the compilation, is left out. The modes: ``eager``; ``compiled``, ``torch.compile`` of the step
(``dopr_robot.train._step_functions``: the forward, and the clip, optimizer step and EMA update as one
function; a DoPr run has two of each when amortized, the refresh step and the plain step); on CUDA
``captured``, the compiled pieces also captured as CUDA graphs (what ``train --compile`` does there).
Run it several times: on a shared machine the rows drift.

The table gives each row's steps/s, its speed-up over the eager run of the same optimizer, and its
time per step relative to AdamW in the same mode (DoPr's overhead, eager and compiled).

``--blocks`` times the loop body of ``train`` (batch, forward, backward, update, schedule; no logging)
of the CPU MLP for each optimizer, eager and compiled, built by ``train``'s own setup, in interleaved
60-step blocks in one process: on a shared machine the ratios within a block, and the fastest blocks,
are the estimates least touched by other jobs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable
from unittest import mock

import numpy as np
import torch

import demos
import dopr_robot.train
from demos.episode import Episode
from demos.hdf5 import save as save_demos
from dopr_robot.config import TrainConfig
from dopr_robot.devices import copy_to, resolve_device
from dopr_robot.train import train

POLICY_SETTINGS = {  # policy row: TrainConfig settings
    "mlp": dict(policy="mlp", history=1, chunk=1, batch_size=256),
    "transformer": dict(policy="transformer", history=8, chunk=4, batch_size=256),
    "pixels": dict(policy="mlp", history=1, chunk=1, batch_size=64, obs_keys=["agentview_image", "flat"]),
}
OPTIMIZERS = {  # label: (optimizer, optimizer_options)
    "adamw": ("adamw", {}),
    "dopr-adamw exact": ("dopr-adamw", {}),
    "dopr-adamw amortized": ("dopr-adamw", {"refresh_every": 10}),
}
MODES = ("eager", "compiled", "captured")


def steps_per_second(run_dir: Path) -> float:
    timed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [line for line in timed if "elapsed_s" in line]
    return (timed[-1]["step"] - timed[0]["step"]) / (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"])


def write_pixel_demos(path: Path, episodes: int = 20, length: int = 50, size: int = 64) -> None:
    """Random 64x64 camera images beside a 12-d state and 3-d actions: the pixel row's data."""
    rng = np.random.default_rng(0)
    save_demos(path, [
        Episode(obs=rng.normal(size=(length, 12)).astype(np.float32),
                actions=rng.uniform(-1, 1, (length, 3)).astype(np.float32),
                rewards=np.zeros(length, np.float32), dones=np.arange(length) == length - 1, success=None, seed=i,
                name=f"demo_{i}", images={"agentview_image": rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8)})
        for i in range(episodes)])


def run_config(data: dict[str, Path], out: Path, policy: str, label: str, mode: str, steps: int) -> TrainConfig:
    optimizer, options = OPTIMIZERS[label]
    settings = dict(POLICY_SETTINGS[policy])
    return TrainConfig(data=str(data["pixels" if policy == "pixels" else "states"]), out=str(out), optimizer=optimizer,
                       optimizer_options=options, steps=steps, log_every=max(1, steps // 10), val_every=10 * steps,
                       checkpoint_every=10 * steps, compile=mode != "eager", **settings)


def compiling(mode: str):
    """``compiled`` on CUDA: the compiled step without its CUDA-graph capture."""
    return mock.patch.object(dopr_robot.train, "CAPTURE_ON_CUDA", mode != "compiled")


def loop_body(config: TrainConfig) -> Callable[[], None]:
    """One step of ``train``'s loop (batch, forward, backward, update, schedule) on the CPU, without its logging."""
    run = dopr_robot.train._setup(config, resume=False, overwrite=True, device="cpu")

    def step() -> None:
        indices = torch.randint(len(run.train_windows), (config.batch_size,), generator=run.sampler)
        loss = run.loss(run.train_windows.batch(copy_to(indices, run.device)))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.update()
        run.scheduler.step()

    return step


def time_blocks(data: dict[str, Path], tmp: Path, blocks: int, steps: int = 60) -> None:
    """ms per step of each optimizer and mode in ``blocks`` interleaved blocks of ``steps`` steps, in one process."""
    rows = [(label, mode) for label in OPTIMIZERS for mode in ("eager", "compiled")]
    run = {row: loop_body(run_config(data, tmp / "-".join(row).replace(" ", "-"), "mlp", *row, steps=10**6))
           for row in rows}
    for step in run.values():
        for _ in range(25):  # compiles, and passes an amortized run's first refresh
            step()
    times: dict[tuple[str, str], list[float]] = {row: [] for row in rows}
    for _ in range(blocks):
        for row, step in run.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[row].append((time.perf_counter() - start) / steps * 1e3)

    def by_block(row: tuple[str, str], reference: tuple[str, str]) -> str:
        ratios = " ".join(f"{t / r:.2f}" for t, r in zip(times[row], times[reference]))
        return f"{ratios} (median {np.median(np.divide(times[row], times[reference])):.2f}, " \
               f"fastest blocks {min(times[row]) / min(times[reference]):.2f})"

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, MLP 256x3 at batch 256, {blocks} blocks "
          f"of {steps} steps, amortized = refresh_every 10")
    for row in rows:
        print(f"{row[0]:<22}{row[1]:<10} ms/step {' '.join(f'{t:.2f}' for t in times[row])}")
    for label in OPTIMIZERS:
        print(f"{label:<22}compiled / eager time by block: {by_block((label, 'compiled'), (label, 'eager'))}")
    for label in list(OPTIMIZERS)[1:]:
        for mode in ("eager", "compiled"):
            print(f"{label:<22}{mode:<10}/ adamw {mode} time by block: {by_block((label, mode), ('adamw', mode))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--policies", default="mlp,transformer", help=f"among {', '.join(POLICY_SETTINGS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default=",".join(MODES), help="captured applies to CUDA only")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all rows, interleaved (each round runs every row once)")
    parser.add_argument("--blocks", type=int, default=0,
                        help="instead: time the CPU MLP step in this many interleaved 60-step blocks")
    args = parser.parse_args()
    policies, modes = args.policies.split(","), args.modes.split(",")
    for name, known in (*((p, POLICY_SETTINGS) for p in policies), *((m, MODES) for m in modes)):
        if name not in known:
            parser.error(f"unknown {name!r}: choose among {', '.join(known)}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = {"states": Path(tmp) / "reach.hdf5", "pixels": Path(tmp) / "pixels.hdf5"}
        demos.collect("Reach-v0", 20, data["states"], seed=0, progress=False)
        if "pixels" in policies:
            write_pixel_demos(data["pixels"])
        if args.blocks:
            time_blocks(data, Path(tmp), args.blocks)
            return
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.steps} steps per run, "
              f"amortized = refresh_every 10")
        print(f"{'device':<8}{'policy':<13}{'optimizer':<22}{'mode':<10}{'steps/s':>9}{'vs eager':>10}{'vs adamw':>10}")
        for device in [resolve_device(name) for name in args.devices.split(",") if name.strip()]:
            if device.type == "cuda":
                print(f"{device}: {torch.cuda.get_device_name(device)}")
            device_modes = [m for m in modes if device.type == "cuda" or m != "captured"]
            for policy, repeat in [(policy, r) for r in range(args.repeats) for policy in policies]:
                speeds: dict[tuple[str, str], float] = {}
                for label in OPTIMIZERS:
                    for mode in device_modes:
                        out = Path(tmp) / f"{device}-{policy}-{label}-{mode}-{repeat}".replace(" ", "-")
                        with compiling(mode):
                            result = train(run_config(data, out, policy, label, mode, args.steps), progress=False,
                                           device=device)
                        speed = speeds[label, mode] = steps_per_second(result.run_dir)
                        eager = f"{speed / speeds[label, 'eager']:>9.2f}x" if (label, "eager") in speeds else f"{'':>10}"
                        adamw = f"{speeds['adamw', mode] / speed:>9.2f}x"
                        print(f"{str(device):<8}{policy:<13}{label:<22}{mode:<10}{speed:>9.1f}{eager}{adamw}", flush=True)


if __name__ == "__main__":
    main()
