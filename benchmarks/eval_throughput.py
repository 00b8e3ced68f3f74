"""Env steps/s of evaluation against bare loops over the same vector envs.

Per task, interleaved over ``--repeats`` runs (medians reported), all with ``--num-envs`` envs in a
``SyncVectorEnv``:

- random: ``vec.step(action_space.sample())`` in a loop (gymnasium's own autoreset), nothing recorded;
- expert: the same loop with ``vec.step(expert.act(obs))``: what the env costs at goal-directed actions
  (arm on the table, puck contacts), which is slower than at random ones;
- policy loop: the same loop driven by the policy below (one batched ``predict`` per step), nothing
  recorded: the bare loop with the same policy;
- policy rollout: ``rollout`` with that policy, a tiny MLP (width 64, depth 2) trained 300 BC steps on 8
  expert episodes, run as in ``eval --no-expert``: seeded resets, per-episode records, one batched
  ``predict`` per step;
- full eval: ``evaluate`` with the expert (policy and expert rollouts, both relabelings, intervals);
  its steps/s counts the env steps of both rollouts over the whole wall time.

The target is policy rollout >= 80% of the policy loop ("/loop": what the rollout's bookkeeping
costs); "/random" and "/expert" compare with the env's own cost at random and at the expert's actions.
The policy loop and rollout timings include building the envs and the seeded resets; the random and
expert loops' do not. Seeds start at ``envs.seeds.BENCHMARK_SEED``.

    python benchmarks/eval_throughput.py                                 # Reach-v0 and Push-v0
    python benchmarks/eval_throughput.py --tasks Push-v0 --episodes 64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium
import torch

import demos
import envs
from envs import seeds
from dopr_robot.config import EvalConfig, TrainConfig
from dopr_robot.evaluate import evaluate
from dopr_robot.evaluate.rollout import PolicyController, rollout
from dopr_robot.train import train
from policies import make_policy

SEED = seeds.BENCHMARK_SEED


def random_steps_per_s(task: str, num_envs: int, steps: int) -> float:
    vec = gymnasium.vector.SyncVectorEnv([partial(envs.make, task)] * num_envs)
    vec.action_space.seed(SEED)
    vec.reset(seed=SEED)
    start = time.perf_counter()
    for _ in range(steps):
        vec.step(vec.action_space.sample())
    elapsed = time.perf_counter() - start
    vec.close()
    return steps * num_envs / elapsed


def expert_steps_per_s(task: str, num_envs: int, steps: int) -> float:
    """The same loop driven by the batched expert: the env's cost at goal-directed (contact-making) actions."""
    vec = gymnasium.vector.SyncVectorEnv([partial(envs.make, task)] * num_envs)
    expert = envs.make_expert(task)
    obs, _ = vec.reset(seed=SEED)
    start = time.perf_counter()
    for _ in range(steps):
        obs, *_ = vec.step(expert.act(obs))
    elapsed = time.perf_counter() - start
    vec.close()
    return steps * num_envs / elapsed


def policy_loop_steps_per_s(policy, task: str, num_envs: int, total_steps: int) -> float:
    """The bare loop with the same policy, the rollout's reference: build the vector envs, reset them
    with seeds, then observation -> one batched ``predict`` -> ``vec.step`` (gymnasium's own autoreset)
    for ``total_steps`` env steps, nothing recorded. Timed as the rollout is, construction and resets
    included."""
    steps = -(-total_steps // num_envs)  # per env, rounded up
    start = time.perf_counter()
    vec = gymnasium.vector.SyncVectorEnv([partial(envs.make, task)] * num_envs)
    obs, _ = vec.reset(seed=SEED)
    with torch.inference_mode():
        for _ in range(steps):
            actions = policy.predict(torch.as_tensor(obs, dtype=torch.float32)[:, None])[:, 0]
            obs, *_ = vec.step(actions.numpy())
    elapsed = time.perf_counter() - start
    vec.close()
    return steps * num_envs / elapsed


class TimedController(PolicyController):
    """PolicyController that adds the time spent in act() (history, predict, chunk bookkeeping) to ``spent``."""

    spent = 0.0

    def act(self, obs, active):
        start = time.perf_counter()
        actions = super().act(obs, active)
        TimedController.spent += time.perf_counter() - start
        return actions


def policy_rollout_steps_per_s(policy, task: str, num_envs: int, episodes: int) -> tuple[float, float, int]:
    """Steps/s of the policy rollout, the share of its wall time spent in the controller, and its env steps."""
    TimedController.spent = 0.0
    start = time.perf_counter()
    runs = rollout(partial(envs.make, task), partial(TimedController, policy), [SEED + i for i in range(episodes)], num_envs)
    elapsed = time.perf_counter() - start
    steps = sum(t.length for t in runs)
    return steps / elapsed, TimedController.spent / elapsed, steps


def full_eval_steps_per_s(policy, task: str, num_envs: int, episodes: int) -> float:
    start = time.perf_counter()
    result = evaluate(policy, task, EvalConfig(episodes=episodes, seed=SEED, num_envs=num_envs))
    return result.env_steps / (time.perf_counter() - start)


def tiny_policy(task: str, directory: Path, width: int, depth: int, steps: int):
    """An MLP trained for ``steps`` steps on 8 expert episodes (0: random weights, expert normalizers).

    A trained policy moves like the expert, so the env's own cost per step (contacts) is the one an
    evaluation meets; random weights tend to push the arm into the table, which slows MuJoCo down.
    """
    data = directory / f"{task}.hdf5"
    demos.collect(task, 8, data, seed=SEED, progress=False)
    config = TrainConfig(data=str(data), out=str(directory / f"{task}-run"), steps=max(steps, 1), batch_size=256,
                         lr=3e-3, warmup_steps=10, val_every=max(steps, 1), checkpoint_every=max(steps, 1),
                         log_every=max(steps, 1), ema_decay=0.0, policy_options={"width": width, "depth": depth})
    if steps > 0:
        return train(config, progress=False).policy.eval()
    stats = demos.load(data).normalization()
    spec = envs.task_spec(task)
    torch.manual_seed(0)
    policy = make_policy("mlp", spec.obs_dim, spec.act_dim, width=width, depth=depth)
    policy.obs_normalizer.set_statistics(stats["obs_mean"], stats["obs_std"])
    policy.action_normalizer.set_statistics(stats["act_mean"], stats["act_std"])
    return policy.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["Reach-v0", "Push-v0"])
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=64, help="episodes per rollout measurement")
    parser.add_argument("--width", type=int, default=64, help="MLP width (the policies' default is 256)")
    parser.add_argument("--depth", type=int, default=2, help="MLP residual blocks (the policies' default is 3)")
    parser.add_argument("--train-steps", type=int, default=300, help="BC steps for the policy (0: random weights)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, {args.num_envs} envs, "
          f"{args.episodes} episodes, MLP width {args.width} depth {args.depth} trained {args.train_steps} steps, "
          f"median of {args.repeats}")
    print(f"{'task':10}  {'random':>7}  {'expert':>7}  {'policy loop':>11}  {'policy rollout':>14}  {'/loop':>5}  "
          f"{'/random':>7}  {'/expert':>7}  {'in controller':>13}  {'full eval':>9}  {'/random':>7}   (env steps/s)")
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            policy = tiny_policy(task, Path(tmp), args.width, args.depth, args.train_steps)
            horizon = envs.task_spec(task).horizon
            random, driven, looped, rolled, share, full = [], [], [], [], [], []
            for _ in range(args.repeats):
                random.append(random_steps_per_s(task, args.num_envs, horizon * args.episodes // args.num_envs))
                driven.append(expert_steps_per_s(task, args.num_envs, horizon * args.episodes // args.num_envs))
                steps_per_s, controller_share, steps = policy_rollout_steps_per_s(policy, task, args.num_envs,
                                                                                  args.episodes)
                looped.append(policy_loop_steps_per_s(policy, task, args.num_envs, steps))
                rolled.append(steps_per_s)
                share.append(controller_share)
                full.append(full_eval_steps_per_s(policy, task, args.num_envs, args.episodes))
            r, e, b, p, c, f = (statistics.median(x) for x in (random, driven, looped, rolled, share, full))
            print(f"{task:10}  {r:7.0f}  {e:7.0f}  {b:11.0f}  {p:14.0f}  {p / b:5.2f}  {p / r:7.2f}  {p / e:7.2f}  "
                  f"{c:13.0%}  {f:9.0f}  {f / r:7.2f}")


if __name__ == "__main__":
    main()
