"""Evaluation from pixels against a bare loop that steps and renders the same envs with the same policy.

Both run ``--episodes`` seeded episodes of ``--task`` in ``--num-envs`` envs made with the camera
``agentview`` at ``--size`` pixels (the envs render it after every step), with one untrained pixel
policy (the default conv encoder + an MLP of width 64, depth 2, on ``robot_state`` and the image):

- bare loop: reset the K envs with the episode seeds, then per step one batched ``policy.predict``
  on the current observations (no history buffers, no records) and one ``env.step`` each; a finished
  env takes the next seed;
- evaluation: ``evaluate(..., with_expert=False)``, what ``eval --no-expert`` runs (the controller's
  image histories, per-episode records, intervals).

Prints the frames (env steps) per second of each, medians over ``--repeats`` interleaved runs, and
their ratio; the target is evaluation >= 0.8 of the bare loop. One intra-op thread (what evaluation uses).

    python benchmarks/pixel_eval.py [--task Push-v0] [--episodes 16] [--num-envs 8] [--size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import numpy as np
import torch

import envs
from dopr_robot.config import EvalConfig
from dopr_robot.evaluate import evaluate
from envs import seeds
from policies import make_policy

KEYS = ["robot_state", "agentview_image"]


def bare_loop(make_env, policy, episode_seeds: list[int], num_envs: int) -> int:
    """Env steps taken by the bare loop over all episodes."""
    slots = [make_env() for _ in range(num_envs)]
    pending, steps = list(episode_seeds), 0
    obs = [slot.reset(seed=pending.pop(0))[0] for slot in slots]
    live = list(range(num_envs))
    with torch.inference_mode():
        while live:
            low = torch.from_numpy(np.stack([obs[i]["robot_state"] for i in live]))[:, None]
            images = {"agentview_image": torch.from_numpy(np.stack([obs[i]["agentview_image"] for i in live]))[:, None]}
            actions = policy.predict(low, images=images)[:, 0].numpy()
            for row, i in enumerate(list(live)):
                obs[i], _, terminated, truncated, _ = slots[i].step(actions[row])
                steps += 1
                if terminated or truncated:
                    if pending:
                        obs[i] = slots[i].reset(seed=pending.pop(0))[0]
                    else:
                        live.remove(i)
    for slot in slots:
        slot.close()
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Push-v0")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = envs.task_spec(args.task)
    make_env = partial(envs.make, args.task, cameras=("agentview",), image_size=(args.size, args.size))
    torch.manual_seed(0)
    policy = make_policy("mlp", spec.obs_keys["robot_state"], spec.act_dim,
                         image_shapes={"agentview_image": (args.size, args.size, 3)}, width=64, depth=2).eval()
    episode_seeds = [seeds.BENCHMARK_SEED + i for i in range(args.episodes)]
    config = EvalConfig(episodes=args.episodes, seed=seeds.BENCHMARK_SEED, num_envs=args.num_envs, with_expert=False)
    load_before = os.getloadavg()
    bare, full = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        steps = bare_loop(make_env, policy, episode_seeds, args.num_envs)
        bare.append(steps / (time.perf_counter() - started))
        started = time.perf_counter()
        result = evaluate(policy, args.task, config, obs_keys=KEYS)
        full.append(result.env_steps / (time.perf_counter() - started))
    print(f"{args.task}, agentview {args.size}x{args.size}, {args.episodes} episodes in {args.num_envs} envs, "
          f"1 thread; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"bare loop   {' '.join(f'{x:7.0f}' for x in bare)} frames/s  (median {statistics.median(bare):.0f})")
    print(f"evaluation  {' '.join(f'{x:7.0f}' for x in full)} frames/s  (median {statistics.median(full):.0f})")
    print(f"evaluation / bare loop: {statistics.median(full) / statistics.median(bare):.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
