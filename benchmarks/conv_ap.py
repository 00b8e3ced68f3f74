"""Choose DoPr's default conv form: a small conv-net regression, AdamW against DoPr-AdamW with each form.

    OMP_NUM_THREADS=1 python benchmarks/conv_ap.py [--steps 300] [--seeds 3] [--lrs 0.001,0.003,0.01] [--threads 1]
        [--cost-size 64]

The student and a random teacher share one architecture: Conv2d(3→16, 3x3) → tanh → Conv2d(16→16, 3x3,
stride 2) → tanh → 4x4 average pool → Linear(256→4), on 16x16 images whose channels are scaled, mixed,
offset and spatially smoothed (an input second moment far from the identity, as pixels have). Each
optimizer trains ``--steps`` steps of batch 64 drawn from 2,048 training images at every learning
rate of ``--lrs`` (the same for all: DoPr-X starts from X's settings); the table gives the final loss
on the training set and on 512 held-out images (as a fraction of the targets' variance, mean ± sd over
seeds) and the median wall time of a training step (small here; the cost table is the one that
compares costs). The amortized row refreshes the statistics (of that step's batch) and the inverse every 10th step. "dopr-adamw linear only" takes the conv layers out
of the adapter registry (AdamW on their raw gradient, AP on the readout): what the conv AP adds.

A second table times a training step of the CPU pixel encoder's shape (4 conv layers of 32 channels,
the first of stride 2, spatial-softmax readout) at ``--cost-size`` px, batch 64, for AdamW and both
forms, exact and amortized (``refresh_every=10``): the unfold form's statistics cost n·(9·c_in)² per
layer against the channel form's n·c_in² (n = batch x output positions).

This measures training loss and cost only; closed-loop results from pixels are not part of it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dopr_robot.optim import make_optimizer
from dopr_robot.optim.adapters import ADAPTERS

VARIANTS = {  # name -> (optimizer, extra options, conv layers covered)
    "adamw": ("adamw", {}, True),
    "dopr-adamw channel": ("dopr-adamw", {"conv_form": "channel"}, True),
    "dopr-adamw unfold": ("dopr-adamw", {"conv_form": "unfold"}, True),
    "dopr-adamw unfold refresh_every=10": ("dopr-adamw", {"conv_form": "unfold", "refresh_every": 10}, True),
    "dopr-adamw linear only": ("dopr-adamw", {}, False),
}


def make_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
                         nn.Tanh(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 4))


def make_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, 16, 16): smoothed noise, channels scaled by 0.2..2, mixed, and offset."""
    raw = torch.randn(n, 3, 16, 16, generator=generator)
    raw = F.avg_pool2d(F.pad(raw, (1, 1, 1, 1), mode="circular"), 3, stride=1)  # neighbouring pixels correlate
    mix = torch.tensor([[1.0, 0.8, 0.5], [0.0, 1.0, 0.8], [0.0, 0.0, 1.0]])
    scaled = raw * torch.tensor([0.2, 1.0, 2.0]).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", mix, scaled) + torch.tensor([0.5, -1.0, 1.5]).view(1, 3, 1, 1)


@contextmanager
def conv_layers_uncovered() -> Iterator[None]:
    """Convolutions out of the registry (and DoPr's warning that most parameters then get no AP, expected here)."""
    removed = {cls: ADAPTERS.pop(cls) for cls in (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d)}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="DoPr covers only")
            yield
    finally:
        ADAPTERS.update(removed)


def relative_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(inputs) - targets).pow(2).mean() / targets.var(dim=0).mean())


def run(variant: str, lr: float, seed: int, steps: int, batch: int = 64) -> tuple[float, float, float]:
    """(training loss, held-out loss, median seconds per step) of one training run."""
    generator = torch.Generator().manual_seed(seed)
    images = make_images(2048 + 512, generator)
    torch.manual_seed(10_000 + seed)
    teacher = make_net()
    with torch.no_grad():
        targets = teacher(images) * 3.0
    train, held_out = (images[:2048], targets[:2048]), (images[2048:], targets[2048:])
    torch.manual_seed(seed)
    student = make_net()
    name, options, conv_covered = VARIANTS[variant]
    if conv_covered:
        optimizer = make_optimizer(name, student, lr=lr, weight_decay=0.0, **options)
    else:
        with conv_layers_uncovered():
            optimizer = make_optimizer(name, student, lr=lr, weight_decay=0.0, **options)
    times = []
    for _ in range(steps):
        index = torch.randint(0, 2048, (batch,), generator=generator)
        start = time.perf_counter()
        loss = (student(train[0][index]) - train[1][index]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return relative_loss(student, *train), relative_loss(student, *held_out), statistics.median(times)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) image coordinates of each channel's softmax over positions: (B, C, H, W) -> (B, 2C)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[-2:]
        weights = features.flatten(2).softmax(dim=-1).view_as(features)
        ys, xs = torch.linspace(-1, 1, height), torch.linspace(-1, 1, width)
        return torch.cat([(weights.sum(-1) * ys).sum(-1), (weights.sum(-2) * xs).sum(-1)], dim=1)


def make_encoder() -> nn.Sequential:
    """The CPU pixel encoder's shape: 4 conv layers of 32 channels (the first of stride 2), a spatial-softmax
    readout of 64 numbers, a linear head."""
    layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, SpatialSoftmax(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 7))


COST_VARIANTS = {  # name -> (optimizer, options)
    "adamw": ("adamw", {}),
    "dopr-adamw channel": ("dopr-adamw", {"conv_form": "channel"}),
    "dopr-adamw unfold": ("dopr-adamw", {"conv_form": "unfold"}),
    "dopr-adamw channel refresh_every=10": ("dopr-adamw", {"conv_form": "channel", "refresh_every": 10}),
    "dopr-adamw unfold refresh_every=10": ("dopr-adamw", {"conv_form": "unfold", "refresh_every": 10}),
}


def step_costs(size: int, batch: int, steps: int, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per training step of the encoder on size x size images: the mean over ``steps`` steps (a
    whole refresh cycle when ``steps`` is a multiple of ``refresh_every``), the variants interleaved, the best
    of ``rounds`` (others share this machine's cores: the minimum is the least disturbed)."""
    generator = torch.Generator().manual_seed(0)
    images, targets = torch.rand(batch, 3, size, size, generator=generator), torch.randn(batch, 7, generator=generator)
    runs = {}
    for variant, (name, options) in COST_VARIANTS.items():
        torch.manual_seed(0)
        model = make_encoder()
        runs[variant] = (model, make_optimizer(name, model, lr=1e-3, **options))
    best = {variant: float("inf") for variant in runs}
    for _ in range(rounds):
        for variant, (model, optimizer) in runs.items():
            times = []
            for step in range(steps + 1):  # the first step creates state
                start = time.perf_counter()
                loss = (model(images) - targets).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - start)
            best[variant] = min(best[variant], 1e3 * statistics.mean(times[1:]))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of the loss table (0: skip it)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", default="0.001,0.003,0.01")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost-size", type=int, default=64, help="image size of the cost table (0: skip it)")
    parser.add_argument("--cost-steps", type=int, default=10,
                        help="timed steps per variant and round (a multiple of 10, the refresh period)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.steps:
        loss_table(args)
    if args.cost_size:
        print(f"\nCost: the 4-conv encoder at {args.cost_size}x{args.cost_size}, batch 64, {args.threads} thread(s)")
        print("| optimizer | ms/step | x adamw |")
        print("|---|---|---|")
        costs = step_costs(args.cost_size, 64, args.cost_steps)
        for variant, ms in costs.items():
            print(f"| {variant} | {ms:.1f} | {ms / costs['adamw']:.2f} |", flush=True)


def loss_table(args: argparse.Namespace) -> None:
    print(f"{args.steps} steps, batch 64, seeds 0..{args.seeds - 1}, {args.threads} thread(s); "
          "loss as a fraction of the targets' variance (mean ± sd over seeds)")
    print("| optimizer | lr | train loss | held-out loss | ms/step |")
    print("|---|---|---|---|---|")
    for variant in args.variants.split(","):
        for lr in [float(value) for value in args.lrs.split(",")]:
            results = [run(variant, lr, seed, args.steps) for seed in range(args.seeds)]
            train, held_out, seconds = zip(*results)
            spread = (lambda values: statistics.stdev(values) if len(values) > 1 else 0.0)
            print(f"| {variant} | {lr:g} | {statistics.mean(train):.4f} ± {spread(train):.4f} "
                  f"| {statistics.mean(held_out):.4f} ± {spread(held_out):.4f} "
                  f"| {1e3 * statistics.median(seconds):.2f} |", flush=True)


if __name__ == "__main__":
    main()
