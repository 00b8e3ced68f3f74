"""Time of one pixel training step (forward + backward + clip + optimizer step), AdamW vs DoPr-AdamW.

The model is what ``train --policy mlp --obs-keys agentview_image,robot_state`` builds at 64 px: the
default conv encoder (4 conv layers of 32 channels, spatial softmax, random shift) and the default
residual MLP (width 256, depth 3), a 12-d low-dim observation, 3-d actions, batch 64 of uint8
images. Prints the milliseconds per step of each optimizer (mean of ``--steps`` timed steps after
``--warmup``), ``--repeats`` rounds interleaved so the optimizers meet the same machine load, the
forward + backward alone for reference, DoPr-AdamW with its defaults, with each conv form named, and
each form with ``refresh_every=10`` (rN: statistics and factors every N steps), the DoPr/AdamW ratios, DoPr's coverage table (which layers it
preconditions, how), and the load average before and after. On a shared machine the wall times
mean little without the load, so each row also gives the process CPU time per step divided by the
threads: what the step costs when the threads get whole cores (spin-waiting threads inflate it a
little, so it is an upper bound of that).

    python benchmarks/pixel_step.py [--threads 2] [--repeats 3] [--size 64] [--encoder conv] [--device cpu] [--amp bf16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from dopr_robot.devices import resolve_device
from dopr_robot.optim import make_optimizer
from dopr_robot.train import mixed_precision
from policies import make_policy

OBS_DIM, ACT_DIM = 12, 3


def make_batch(batch: int, size: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(batch, 1, OBS_DIM, generator=g).to(device),
            "actions": torch.randn(batch, 1, ACT_DIM, generator=g).to(device),
            "action_mask": torch.ones(batch, 1, dtype=torch.bool, device=device),
            "images": {"agentview_image": torch.randint(0, 256, (batch, 1, size, size, 3), generator=g,
                                                        dtype=torch.uint8).to(device)}}


# label -> (optimizer, its options); "none": forward + backward only.
VARIANTS = {"forward + backward": ("none", {}), "AdamW step": ("adamw", {}), "DoPr-AdamW step": ("dopr-adamw", {}),
            "DoPr-AdamW unfold": ("dopr-adamw", {"conv_form": "unfold"}),
            "DoPr-AdamW channel": ("dopr-adamw", {"conv_form": "channel"}),
            "DoPr unfold, r10": ("dopr-adamw", {"conv_form": "unfold", "refresh_every": 10}),
            "DoPr channel, r10": ("dopr-adamw", {"conv_form": "channel", "refresh_every": 10})}


def build(optimizer: str, options: dict, args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    policy = make_policy("mlp", OBS_DIM, ACT_DIM, image_shapes={"agentview_image": (args.size, args.size, 3)},
                         encoder=args.encoder).to(device)
    return policy, (make_optimizer(optimizer, policy, lr=1e-4, **options) if optimizer != "none" else None)


def ms_per_step(policy: nn.Module, optimizer, batch: dict, args: argparse.Namespace,
                device: torch.device) -> tuple[float, float]:
    """Mean wall milliseconds of one step over ``args.steps`` timed steps (after ``args.warmup``; the mean,
    so that an amortized refresh every N steps counts 1/N of its cost when steps is a multiple of N),
    and the process CPU milliseconds per step divided by the threads."""
    times, cpu = [], 0.0
    forward = mixed_precision(policy, device, args.amp)  # train's network call: autocast with --amp bf16
    for i in range(args.warmup + args.steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        loss = policy.loss(batch, forward=forward)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer is not None:
            nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
        else:
            policy.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(1000.0 * (time.perf_counter() - started))
            cpu += 1000.0 * (time.process_time() - cpu_started)
    return statistics.fmean(times), cpu / args.steps / args.threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--encoder", default="conv")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="none", help="none | bf16 (as train --amp: the forward and backward in bfloat16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch = make_batch(args.batch, args.size, device)
    load_before = os.getloadavg()
    models = {label: build(name, options, args, device) for label, (name, options) in VARIANTS.items()}
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in models}
    for _ in range(args.repeats):
        for label, (policy, optimizer) in models.items():
            results[label].append(ms_per_step(policy, optimizer, batch, args, device))
    load_after = os.getloadavg()

    policy, dopr = models["DoPr-AdamW step"]
    print(f"pixel step: mlp + {args.encoder} encoder, {args.size}x{args.size} px, batch {args.batch}, "
          f"{args.threads} thread(s), {device}, amp {args.amp}; {sum(p.numel() for p in policy.parameters())} parameters")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"{'':20s} wall ms per round (median)           CPU ms / threads per round")
    for label, rows in results.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        print(f"{label:20s} {' '.join(f'{ms:7.1f}' for ms in walls)}  ({statistics.median(walls):7.1f})    "
              f"{' '.join(f'{ms:7.1f}' for ms in cpus)}")
    adamw = results["AdamW step"]
    for label in (label for label in results if label.startswith("DoPr")):
        ratios = [d[0] / a[0] for d, a in zip(results[label], adamw)]
        cpu_ratios = [d[1] / a[1] for d, a in zip(results[label], adamw)]
        print(f"{label} / AdamW: wall {' '.join(f'{r:.2f}' for r in ratios)};  CPU {' '.join(f'{r:.2f}' for r in cpu_ratios)}")
    print("DoPr coverage (default conv form):")
    print(dopr.format_coverage())


if __name__ == "__main__":
    main()
