"""Can the conv encoder localise Reach-v0's target? Regress the target's xyz from agentview images alone.

The conv encoder's backbone (policies/encoders.py), its spatial-softmax readout at a given temperature,
a Linear to 64 features and a small head (ReLU, Linear 256, GELU, Linear 3) are trained with AdamW
(lr 1e-3, batch 64) to predict the normalized target position (the ``goal`` key) from one frame, with a
random shift of ``--shift`` pixels; the first ``--train-episodes`` episodes of the file train, the last 20
are held out. Prints the held-out error (mean Euclidean, cm) every 100 steps, and at the end its part
along the agentview camera's line of sight (depth) and across it. Used in docs/results/pixels.md:

    python benchmarks/pixel_target_probe.py --data runs/pixels/reach_px64_200.hdf5 --softmax-temperature 1
    python benchmarks/pixel_target_probe.py --data runs/pixels/reach_px64_200.hdf5 --softmax-temperature 0.1

One thread; about 0.2 s per step on the project's 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from policies.encoders import conv_backbone, random_shift, spatial_softmax  # noqa: E402

AGENTVIEW_POSITION = (0.75, -0.5, 0.6)  # envs/assets/reach.xml, camera "agentview"
HELD_OUT = 20


class TargetProbe(nn.Module):
    """uint8 (N, H, W, 3) -> normalized target xyz (N, 3)."""

    def __init__(self, channels: int, temperature: float):
        super().__init__()
        self.backbone = conv_backbone(channels)
        self.temperature = temperature
        self.readout = nn.Linear(2 * channels, 64)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 3))

    def forward(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
        return self.head(self.readout(spatial_softmax(self.backbone(x), self.temperature)))


def load(file: h5py.File, names: list[str]) -> tuple[Tensor, Tensor]:
    images = np.concatenate([file["data"][n]["obs"]["agentview_image"][:] for n in names])
    targets = np.concatenate([file["data"][n]["obs"]["goal"][:] for n in names])
    return torch.from_numpy(images), torch.from_numpy(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a Reach-v0 file from `collect --cameras agentview`")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train-episodes", type=int, default=180)
    parser.add_argument("--shift", type=int, default=4, help="random shift in training (0: none)")
    parser.add_argument("--softmax-temperature", type=float, default=0.1)
    parser.add_argument("--channels", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with h5py.File(args.data, "r") as file:
        names = sorted(file["data"], key=lambda name: int(name.split("_")[1]))
        if len(names) < args.train_episodes + HELD_OUT:
            parser.error(f"{args.data} has {len(names)} episodes; --train-episodes {args.train_episodes} needs "
                         f"{args.train_episodes + HELD_OUT} (the last {HELD_OUT} are held out): lower it")
        train_images, train_targets = load(file, names[:args.train_episodes])
        test_images, test_targets = load(file, names[-HELD_OUT:])
    mean, std = train_targets.mean(0), train_targets.std(0)
    net = TargetProbe(args.channels, args.softmax_temperature)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0)

    def held_out_predictions() -> Tensor:
        net.eval()
        with torch.no_grad():
            predicted = torch.cat([net(test_images[i:i + 500]) for i in range(0, len(test_images), 500)])
        net.train()
        return predicted * std + mean

    start = time.time()
    for step in range(1, args.steps + 1):
        rows = torch.randint(0, len(train_images), (64,))
        images = random_shift(train_images[rows], args.shift) if args.shift else train_images[rows]
        loss = ((net(images) - (train_targets[rows] - mean) / std) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            error = (held_out_predictions() - test_targets).norm(dim=1).mean().item() * 100
            print(f"step {step}: train loss {loss.item():.4f}, held-out error {error:.2f} cm, "
                  f"{time.time() - start:.0f} s", flush=True)
    error = held_out_predictions() - test_targets
    sight = test_targets - torch.tensor(AGENTVIEW_POSITION)
    sight = sight / sight.norm(dim=1, keepdim=True)
    along = (error * sight).sum(dim=1)
    across = (error - along[:, None] * sight).norm(dim=1)
    print(f"held-out error along / across the camera's line of sight: {along.abs().mean().item() * 100:.2f} / "
          f"{across.mean().item() * 100:.2f} cm; predicting the mean: "
          f"{(mean - test_targets).norm(dim=1).mean().item() * 100:.1f} cm")


if __name__ == "__main__":
    main()
