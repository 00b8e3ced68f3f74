"""Training steps/s of the BC loop for each device, policy and optimizer (2 CPU threads by default).

    python benchmarks/train_speed.py [--steps 200] [--optimizers adamw,dopr-adamw] [--threads 2] [--devices cuda,cpu]

``--devices`` defaults to every device this machine has (the CPU, and the first GPU when CUDA is available).

Uses Reach-v0 demonstrations (collected once into a temporary directory), the default policy sizes
(MLP 256x3 residual, batch 256; transformer d_model 128, 4 layers, 4 heads, history 8, chunk 4,
batch 256), and times the loop from the run's own metrics (first log line excluded as warm-up).
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


def steps_per_second(run_dir: Path, log_every: int) -> float:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [line for line in lines if "elapsed_s" in line]
    first, last = timed[0], timed[-1]
    return (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--optimizers", default="adamw,dopr-adamw")
    parser.add_argument("--policies", default="mlp,transformer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--devices", default=",".join(available_devices()),
                        help="comma-separated: cpu, cuda, cuda:N, auto (default: every device available here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [resolve_device(name) for name in args.devices.split(",") if name.strip()]
    log_every = max(1, args.steps // 10)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reach.hdf5"
        demos.collect("Reach-v0", 20, data, seed=0, progress=False)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.steps} steps, batch 256")
        for device in devices:
            if device.type == "cuda":
                print(f"{device}: {torch.cuda.get_device_name(device)}")
        print(f"{'device':<10}{'policy':<12}{'optimizer':<12}{'steps/s':>9}")
        for device in devices:
            for policy in args.policies.split(","):
                for optimizer in args.optimizers.split(","):
                    config = TrainConfig(data=str(data), out=str(Path(tmp) / f"{device}-{policy}-{optimizer}"),
                                         policy=policy, optimizer=optimizer, steps=args.steps, batch_size=256,
                                         log_every=log_every, val_every=10 * args.steps,
                                         checkpoint_every=10 * args.steps, **POLICY_SETTINGS[policy])
                    result = train(config, progress=False, device=device)
                    print(f"{str(device):<10}{policy:<12}{optimizer:<12}{steps_per_second(result.run_dir, log_every):>9.1f}",
                          flush=True)


def available_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


if __name__ == "__main__":
    main()
