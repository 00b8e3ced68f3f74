"""Training steps/s of the BC loop, eager against ``--compile``, for AdamW and DoPr-AdamW (exact and amortized).

    python benchmarks/compiled_step.py [--steps 300] [--policies mlp,transformer] [--threads 2] [--devices cpu,cuda] [--repeats 3]

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
from pathlib import Path

import torch

import demos
from dopr_robot.config import TrainConfig
from dopr_robot.devices import resolve_device
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--policies", default="mlp,transformer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all rows, interleaved (each round runs every row once)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
