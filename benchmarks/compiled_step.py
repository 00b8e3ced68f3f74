"""Training steps/s of the BC loop, eager against ``--compile``, for AdamW and DoPr-AdamW (exact and amortized).

    python benchmarks/compiled_step.py [--steps 300] [--policies mlp,transformer] [--threads 2] [--devices cpu,cuda] [--repeats 3]
    python benchmarks/compiled_step.py --blocks 8 --threads 1   # the compiled CPU step alone, in interleaved blocks

Each row is one ``train()`` run on Reach-v0 demonstrations (collected once into a temporary directory)
with the default policy sizes (MLP 256x3, batch 256; transformer d_model 128, 4 layers, history 8,
chunk 4), timed from the run's own metrics between its first and last log points: the first interval,
which pays the compilation, is left out. On the CPU ``--compile`` is ``torch.compile``; on CUDA its
compiled pieces are also captured as CUDA graphs, so the CUDA rows are eager against compiled+captured.
Under ``--compile`` a DoPr run compiles its forward with the statistics hooks, and its clip, solve and base
step as one function (two of each when amortized: the refresh step and the plain step; see
``dopr_robot.train._step_functions``). Run it several times: on a shared machine the rows drift.

The table gives each row's steps/s, its speed-up over the eager run of the same optimizer, and its
time per step relative to AdamW in the same mode (DoPr's overhead, eager and compiled).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import demos
from dopr_robot.config import TrainConfig
from dopr_robot.devices import resolve_device
from dopr_robot.optim.dopr import DoPr
from dopr_robot.train import train

POLICY_SETTINGS = {"mlp": dict(history=1, chunk=1), "transformer": dict(history=8, chunk=4)}
OPTIMIZERS = {  # label: (optimizer, optimizer_options)
    "adamw": ("adamw", {}),
    "dopr-adamw exact": ("dopr-adamw", {}),
    "dopr-adamw amortized": ("dopr-adamw", {"refresh_every": 10}),
}


def steps_per_second(run_dir: Path) -> float:
    timed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [line for line in timed if "elapsed_s" in line]
    return (timed[-1]["step"] - timed[0]["step"]) / (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"])


def block_step(kind: str) -> Callable[[], None]:
    """One compiled training step (forward, backward, clip, optimizer) of a 17-256x4-6 MLP at batch 256,
    built as ``dopr_robot.train`` builds it, for ``kind`` in ``BLOCK_KINDS``: for the ``--blocks`` timing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(17, 256), nn.ReLU(), *[m for _ in range(3) for m in (nn.Linear(256, 256), nn.ReLU())],
                          nn.Linear(256, 6))
    inputs, targets = torch.randn(256, 17), torch.randn(256, 6)
    if kind == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-3))
    else:
        optimizer = DoPr(model, "adamw", lr=1e-3, refresh_every=10 if kind == "dopr-adamw amortized" else 1)
        optimizer.param_groups[0]["lr"] = torch.tensor(1e-3)
    loss = torch.compile(lambda: (model(inputs) - targets).pow(2).mean(), dynamic=False)

    def update(refresh: bool = False) -> None:
        with torch.no_grad():
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if refresh is None:
                optimizer.step()
            else:
                optimizer.apply_step(refresh)

    compiled = torch.compile(update, dynamic=False, options={"fx_graph_cache": False})

    def step() -> None:
        value = loss()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if kind == "adamw":
            compiled(None)
        elif not optimizer.state_complete():
            update(None)
        else:
            refresh = optimizer.begin_step()
            compiled(refresh)
            optimizer.end_step()

    return step


BLOCK_KINDS = ("adamw", "dopr-adamw exact", "dopr-adamw amortized")


def time_blocks(blocks: int, steps: int = 60) -> None:
    """ms per compiled step of each kind in ``blocks`` interleaved blocks of ``steps`` steps, in one process:
    on a shared machine the fastest block of each kind is the estimate least touched by other jobs."""
    run = {kind: block_step(kind) for kind in BLOCK_KINDS}
    for step in run.values():
        for _ in range(25):  # compiles, and passes an amortized run's first refresh
            step()
    times: dict[str, list[float]] = {kind: [] for kind in BLOCK_KINDS}
    for _ in range(blocks):
        for kind, step in run.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[kind].append((time.perf_counter() - start) / steps * 1e3)
    for kind in BLOCK_KINDS:
        ratios = " ".join(f"{t / a:.2f}" for t, a in zip(times[kind], times["adamw"]))
        print(f"{kind:<22} ms/step {' '.join(f'{t:.2f}' for t in times[kind])}; vs adamw by block {ratios}; "
              f"fastest blocks {min(times[kind]) / min(times['adamw']):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--policies", default="mlp,transformer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all rows, interleaved (each round runs every row once)")
    parser.add_argument("--blocks", type=int, default=0,
                        help="instead: time the compiled CPU step alone in this many interleaved 60-step blocks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.blocks:
        time_blocks(args.blocks)
        return
    log_every = max(1, args.steps // 10)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reach.hdf5"
        demos.collect("Reach-v0", 20, data, seed=0, progress=False)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.steps} steps per run, "
              f"amortized = refresh_every 10")
        print(f"{'device':<8}{'policy':<13}{'optimizer':<22}{'mode':<20}{'steps/s':>9}{'vs eager':>10}{'vs adamw':>10}")
        for device in [resolve_device(name) for name in args.devices.split(",") if name.strip()]:
            if device.type == "cuda":
                print(f"{device}: {torch.cuda.get_device_name(device)}")
            compiled_mode = "compiled+captured" if device.type == "cuda" else "compiled"
            for policy, repeat in [(policy, r) for r in range(args.repeats) for policy in args.policies.split(",")]:
                speeds: dict[tuple[str, bool], float] = {}
                for label, (optimizer, options) in OPTIMIZERS.items():
                    for compile in (False, True):
                        name = f"{device}-{policy}-{label}-{compile}-{repeat}".replace(" ", "-")
                        config = TrainConfig(
                            data=str(data), out=str(Path(tmp) / name),
                            policy=policy, optimizer=optimizer, optimizer_options=options, steps=args.steps,
                            batch_size=256, log_every=log_every, val_every=10 * args.steps,
                            checkpoint_every=10 * args.steps, compile=compile, **POLICY_SETTINGS[policy])
                        result = train(config, progress=False, device=device)
                        speed = speeds[label, compile] = steps_per_second(result.run_dir)
                        print(f"{str(device):<8}{policy:<13}{label:<22}{compiled_mode if compile else 'eager':<20}"
                              f"{speed:>9.1f}{speed / speeds[label, False]:>9.2f}x"
                              f"{speeds['adamw', compile] / speed:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
