"""The temporal U-Net flow head (``flow-unet``): its training step against ``flow-mlp``'s, DoPr-AdamW's
step against AdamW's at the published size, and the multimodal gap task of the flow tests.

    python benchmarks/unet_step.py [--part step,dopr,gap] [--threads 1] [--repeats 5] [--device cpu]

- ``step``: one training step (loss, backward, AdamW) of the CPU-default ``flow-unet`` (widths 32/64,
  kernel 5) against ``flow-mlp``'s default (residual MLP 256 wide, 3 blocks, FiLM head 256 wide, 2
  blocks), both on low-dim Push-v0 windows (5 demonstrations collected here), history 2, chunk 16,
  batch 256. Target: flow-unet <= 3x flow-mlp.
- ``dopr``: DoPr-AdamW's step against AdamW's on the published-size U-Net (widths 128/256/512,
  kernel 5, time_dim 256, ~20M parameters in the velocity network) conditioned on a 137-d
  observation (Tool-Hang's: two cameras' 64 features and 9 low-dim numbers, as if encoded), history
  2, chunk 16; batch ``--dopr-batch`` (16 on a CPU: the ratio is what is measured); DoPr with its
  defaults and with ``refresh_every 10`` (``--dopr-options`` sets the variants). Target <= 2x.
- ``gap``: the flow tests' gap task (``tests/test_policies_flow.py``: a point passes a wall on the
  left or the right, the expert picks a side per episode, a regressor walks into the wall): flow-unet
  (CPU default) trained on chunks of 4 from 20 demonstrations, 1500 AdamW steps, executing 2 actions
  per chunk, 50 closed-loop episodes. Target >= 90% success.

Timing: variants alternate within each repeat (a shared machine's load hits both alike); each cell
is the median over repeats of the mean per step; ratios are of the medians, with the per-repeat
ratios beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the gap task lives in the flow tests

import demos  # noqa: E402
from dopr_robot.optim import make_optimizer  # noqa: E402
from policies import Policy, make_policy  # noqa: E402

HISTORY, CHUNK = 2, 16
PAPER_SIZE = {"unet_width": 128, "unet_levels": 3, "unet_kernel": 5, "time_dim": 256}


def step_function(policy: Policy, optimizer: str, batch: dict[str, torch.Tensor], **options: Any) -> Callable[[], None]:
    """One training step of ``policy`` with a registry optimizer (and its ``options``) on a fixed batch."""
    opt = make_optimizer(optimizer, policy, lr=1e-4, **options)

    def step() -> None:
        loss = policy.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def interleaved(steps: dict[str, Callable[[], None]], repeats: int, calls: int, device: torch.device) -> dict[str, list[float]]:
    """ms per call of each step function, ``repeats`` times, the functions alternating within a repeat."""
    for step in steps.values():  # warm-up (DoPr's first statistics, allocator, caches)
        step()
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(calls):
                step()
            _sync(device)
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return times


def report(times: dict[str, list[float]], base: str, target: float) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        ratios = [v / b for v, b in zip(values, times[base])]
        print(f"  {name:28s} {medians[name]:9.2f} ms/step   x{medians[name] / medians[base]:.2f} "
              f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)})")
    met = [n for n in times if n != base and medians[n] / medians[base] <= target]
    missed = [n for n in times if n != base and n not in met]
    print(f"  target <= {target}x: met by {', '.join(met) or 'none'}; not by {', '.join(missed) or 'none'}")


def push_batch(device: torch.device, batch_size: int = 256) -> tuple[int, int, dict[str, torch.Tensor]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "push.hdf5"
        demos.collect("Push-v0", 5, path, seed=0, progress=False)
        dataset = demos.load(path)
    windows = dataset.windows("train", history=HISTORY, chunk=CHUNK)
    indices = torch.randint(len(windows), (batch_size,), generator=torch.Generator().manual_seed(0))
    batch = {k: v.to(device) for k, v in windows.batch(indices).items()}
    return dataset.obs_dim, dataset.act_dim, batch


def part_step(args: argparse.Namespace, device: torch.device) -> None:
    obs_dim, act_dim, batch = push_batch(device)
    steps = {}
    for name in ("flow-mlp", "flow-unet"):
        torch.manual_seed(0)
        policy = make_policy(name, obs_dim, act_dim, HISTORY, CHUNK).to(device).train()
        policy.action_normalizer.set_statistics(torch.zeros(act_dim), torch.ones(act_dim))
        count = sum(p.numel() for p in policy.parameters())
        steps[f"{name} ({count / 1e3:.0f}k params)"] = step_function(policy, "adamw", batch)
    print(f"training step, AdamW, Push-v0 low-dim, history {HISTORY}, chunk {CHUNK}, batch 256:")
    report(interleaved(steps, args.repeats, args.calls, device), next(iter(steps)), 3.0)


def part_dopr(args: argparse.Namespace, device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    size, obs_dim, act_dim = args.dopr_batch, 137, 10
    batch = {"obs": torch.randn(size, HISTORY, obs_dim, generator=generator).to(device),
             "actions": torch.randn(size, CHUNK, act_dim, generator=generator).to(device),
             "action_mask": torch.ones(size, CHUNK, dtype=torch.bool, device=device)}
    variants = {"adamw": ("adamw", {}), **{f"dopr-adamw {json.dumps(o)}": ("dopr-adamw", o) for o in args.dopr_options}}
    steps = {}
    for name, (optimizer, options) in variants.items():
        torch.manual_seed(0)
        policy = make_policy("flow-unet", obs_dim, act_dim, HISTORY, CHUNK, **PAPER_SIZE).to(device).train()
        steps[name] = step_function(policy, optimizer, batch, **options)
    count = sum(p.numel() for p in policy.velocity.parameters())
    print(f"paper-size U-Net ({count / 1e6:.1f}M parameters), 137-d condition, batch {size}, "
          f"{max(1, args.calls // 4)} steps per repeat:")
    report(interleaved(steps, args.repeats, max(1, args.calls // 4), device), "adamw", 2.0)


def part_gap(args: argparse.Namespace, device: torch.device) -> None:
    from dopr_robot.config import EvalConfig
    from dopr_robot.evaluate import evaluate
    from tests.test_policies_flow import GapEnv, expert_action

    chunk, episodes, steps = 4, 20, 1500
    obs, actions, masks = [], [], []
    env = GapEnv()
    for i in range(episodes):  # the flow tests' demonstrations, as chunks: half left, half right
        o, _ = env.reset(seed=i)
        side, done, trajectory = (1.0 if i % 2 else -1.0), False, []
        while not done:
            a = expert_action(o, side)[0]
            trajectory.append((o, a))
            o, _, terminated, truncated, _ = env.step(a)
            done = terminated or truncated
        acts = np.array([a for _, a in trajectory], dtype=np.float32)
        for t, (o_t, _) in enumerate(trajectory):
            window = acts[t:t + chunk]
            mask = np.arange(chunk) < len(window)
            obs.append(o_t)
            actions.append(np.concatenate([window, np.repeat(window[-1:], chunk - len(window), axis=0)]))
            masks.append(mask)
    data = {"obs": torch.tensor(np.array(obs), dtype=torch.float32)[:, None],
            "actions": torch.tensor(np.array(actions)), "action_mask": torch.tensor(np.array(masks))}
    torch.manual_seed(0)
    policy = make_policy("flow-unet", 2, 2, history=1, chunk=chunk)
    flat = data["actions"].reshape(-1, 2)
    policy.obs_normalizer.set_statistics(data["obs"][:, 0].mean(0), data["obs"][:, 0].std(0))
    policy.action_normalizer.set_statistics(flat.mean(0), flat.std(0))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(steps):
        indices = torch.randint(len(obs), (128,), generator=order)
        loss = policy.loss({key: value[indices] for key, value in data.items()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = time.perf_counter() - started
    settings = EvalConfig(episodes=50, seed=100, num_envs=10, with_expert=False, actions_per_chunk=2)
    result = evaluate(policy.eval(), "gap", settings, make_env=GapEnv)
    rate = result.closed_loop["success_rate"]
    print(f"gap task: flow-unet (CPU default), chunk {chunk} executing 2, {len(obs)} windows from {episodes} "
          f"demonstrations, {steps} AdamW steps ({trained:.0f} s), 50 episodes: success {rate:.2f} "
          f"(target >= 0.90: {'met' if rate >= 0.9 else 'NOT met'})")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="step,dopr,gap", help="which measurements: step, dopr, gap (comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per timing")
    parser.add_argument("--calls", type=int, default=20, help="steps per repeat (a quarter for the paper-size U-Net)")
    parser.add_argument("--dopr-batch", type=int, default=16, help="batch of the paper-size U-Net timing")
    parser.add_argument("--dopr-options", type=json.loads, nargs="+", default=[{}, {"refresh_every": 10}],
                        help="DoPr variants of the paper-size timing, each a JSON object of DoPr options")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {args.threads} thread(s)")
    parts = {"step": part_step, "dopr": part_dopr, "gap": part_gap}
    for name in args.part.split(","):
        parts[name.strip()](args, device)


if __name__ == "__main__":
    main()
