"""Seeded closed-loop rollouts in K environments at once, with one batched controller call per step.

``rollout(make_env, controller, seeds, num_envs)`` runs episode ``i`` from ``env.reset(seed=seeds[i])``
in whichever of the K slots of a ``gymnasium.vector.SyncVectorEnv`` is free, and returns one
:class:`Trajectory` per seed, in seed order. Exactly ``len(seeds)`` episodes are recorded, each from
its reset to the step on which it terminated or truncated.

Autoreset: the vector env is built with ``AutoresetMode.DISABLED`` and this loop resets finished
slots itself (``reset(seed=..., options={"reset_mask": done})``). gymnasium's NEXT_STEP and SAME_STEP
modes reset a finished sub-env with ``reset()`` and no seed, so the next episode would start from
whatever the env's RNG holds, and which initial state an episode gets would depend on K and on
the lengths of the episodes before it. With our own resets, episode i faces the same initial
state for every K, and two checkpoints evaluated with the same seeds face the same initial states.
Slots left without an episode near the end are reset (with the seed they last ran) and stepped with
the rest, their data dropped: DISABLED mode refuses to step a finished env.

Controllers turn a batch of observations into a batch of actions and keep per-slot memory:
:class:`PolicyController` (observation history padded with the first observation at an episode's
start, as training windows are; action chunks executed ``actions_per_chunk`` steps per prediction)
and :class:`ExpertController` (the task's scripted/SB3 expert, batched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import gymnasium
import numpy as np
import torch

from dopr_robot.devices import module_device
from dopr_robot.errors import UserError
from policies import Policy


@dataclass
class Trajectory:
    """One episode. ``T`` = steps taken.

    obs ``(T + 1, D)``: the reset observation, then the one after each step. actions ``(T, A)``: what
    the controller commanded (before the env's own clipping). rewards ``(T,)``. success ``(T,)``:
    ``info["is_success"]`` after each step. frames: ``T + 1`` RGB arrays when rendered, else None.
    """

    seed: int
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    terminated: bool
    truncated: bool
    frames: list[np.ndarray] | None = None

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


class Controller(Protocol):
    """Batched actor over the K slots of a vector env."""

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        """Slots ``slots`` (bool ``(K,)``) start new episodes; ``obs`` ``(K, D)`` holds their first observations,
        ``seeds`` (length K) the reset seed of each slot's episode."""

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Actions ``(K, A)`` for observations ``(K, D)``; rows of inactive slots may be anything finite."""


class ExpertController:
    """The task's expert: ``expert.act`` on the batch of active rows, no memory."""

    def __init__(self, expert, act_dim: int):
        self.expert, self.act_dim = expert, act_dim

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        actions = np.zeros((obs.shape[0], self.act_dim), dtype=np.float32)
        if active.any():
            actions[active] = self.expert.act(obs[active])
        return actions


class PolicyController:
    """A :class:`~policies.Policy` run per slot: history buffer ``(K, H, D)`` and a chunk queue.

    At an episode's start the history is filled with its first observation: the padding rule of
    :mod:`demos.history`, with which training windows and ``policy_actions`` index; a test holds
    this incremental buffer to :func:`demos.history.history_indices`. A new chunk is predicted for a
    slot when its episode starts or after it has executed ``actions_per_chunk`` actions of the
    current one; slots that need one share one batched ``policy.predict`` call, on the policy's
    device: the histories go there in one copy and the chunks come back in one (the buffers, like
    the environments, stay on the host).

    A policy that samples (:mod:`policies.flow`) draws each episode's noise from a generator of its
    own, seeded with the episode's reset seed when it starts, and each row of a batched predict from
    its slot's generator: an episode's samples do not depend on which episodes share the batch, so
    results do not depend on ``num_envs``. Deterministic policies ignore the generators.
    """

    def __init__(self, policy: Policy, num_envs: int, actions_per_chunk: int = 1):
        check_actions_per_chunk(actions_per_chunk, policy.chunk)
        self.policy, self.actions_per_chunk = policy, actions_per_chunk
        self.device = module_device(policy)
        self.history = np.zeros((num_envs, policy.history, policy.obs_dim), dtype=np.float32)  # (K, H, D) raw
        self.plan = np.zeros((num_envs, policy.chunk, policy.act_dim), dtype=np.float32)  # (K, C, A)
        self.executed = np.full(num_envs, actions_per_chunk)  # actions taken from the current plan
        self.fresh = np.zeros(num_envs, dtype=bool)  # history just filled by reset(): act() must not append
        self.slots = np.arange(num_envs)
        # Each slot's sampling noise, seeded by its episode's reset seed (None: torch's global RNG).
        self.generators: list[torch.Generator | None] = [None] * num_envs

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        self.history[slots] = obs[slots, None, :]
        self.executed[slots] = self.actions_per_chunk
        self.fresh |= slots
        for i in np.flatnonzero(slots):
            seed = None if seeds is None else seeds[i]
            self.generators[i] = None if seed is None else torch.Generator().manual_seed(int(seed))

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        advance = ~self.fresh  # slots whose newest observation is not in the history yet
        if self.policy.history > 1:
            self.history[advance, :-1] = self.history[advance, 1:]
        self.history[advance, -1] = obs[advance]
        self.fresh[:] = False
        need = active & (self.executed >= self.actions_per_chunk)
        if need.all():  # the usual case: every slot re-plans, no gather needed
            self.plan[:] = self._predict(self.history, self.generators)
            self.executed[:] = 0
        elif need.any():
            self.plan[need] = self._predict(self.history[need], [self.generators[i] for i in np.flatnonzero(need)])
            self.executed[need] = 0
        actions = self.plan[self.slots, np.minimum(self.executed, self.policy.chunk - 1)]
        self.executed[active] += 1
        return actions

    def _predict(self, history: np.ndarray, generators: list[torch.Generator | None]) -> np.ndarray:
        """Chunks ``(B, C, A)`` for raw histories ``(B, H, D)``: one batched forward on the policy's
        device, row i's noise (if any) from ``generators[i]``."""
        return self.policy.predict(torch.from_numpy(history).to(self.device), generator=generators).cpu().numpy()


def check_actions_per_chunk(actions_per_chunk: int, chunk: int) -> None:
    if not 1 <= actions_per_chunk <= chunk:
        raise UserError(f"--actions-per-chunk must be between 1 and the policy's chunk ({chunk}), got {actions_per_chunk}")


@dataclass
class _Running:
    """Buffers of the episode a slot is running."""

    episode: int
    obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    success: list = field(default_factory=list)
    frames: list | None = None


def rollout(make_env: Callable[[], gymnasium.Env], controller_factory: Callable[[int], Controller],
            seeds: list[int], num_envs: int, render: bool = False,
            on_episode: Callable[[Trajectory], None] | None = None, inference_threads: int = 1) -> list[Trajectory]:
    """Run one episode per seed in ``min(num_envs, len(seeds))`` envs; trajectories in seed order.

    ``controller_factory(K)`` builds the controller for K slots. ``render``: also keep
    ``env.render()`` frames (the env must have been made with ``render_mode="rgb_array"``).
    ``on_episode`` is called as each episode finishes (progress bars). Torch runs with
    ``inference_threads`` intra-op threads meanwhile (restored after).
    """
    if len(seeds) < 1:
        raise UserError(f"--episodes must be >= 1, got {len(seeds)}")
    k = min(num_envs, len(seeds))
    if k < 1:
        raise UserError(f"--num-envs must be >= 1, got {num_envs}")
    vec = gymnasium.vector.SyncVectorEnv([make_env] * k, copy=False,
                                         autoreset_mode=gymnasium.vector.AutoresetMode.DISABLED)
    threads = torch.get_num_threads()
    # One intra-op thread: a batch of K observations is too small to split, and on a busy 2-core
    # machine OpenMP's spin-waiting made a 16-row MLP call ~170x slower with 2 threads (160 ms vs 0.9 ms).
    torch.set_num_threads(inference_threads)
    try:
        with torch.inference_mode():
            return _run(vec, controller_factory(k), list(seeds), render, on_episode)
    finally:
        torch.set_num_threads(threads)
        vec.close()


def _run(vec, controller: Controller, seeds: list[int], render: bool, on_episode) -> list[Trajectory]:
    k = vec.num_envs
    results: list[Trajectory | None] = [None] * len(seeds)
    running: list[_Running | None] = [None] * k
    last_seed: list[int | None] = [None] * k
    next_episode = 0

    def start(slots: np.ndarray) -> np.ndarray:
        """Reset ``slots``: the next seeds to them in slot order; once all are handed out, a slot idles
        (reset with the seed it last ran, its data dropped)."""
        nonlocal next_episode
        reset_seeds: list[int | None] = [None] * k
        for i in np.flatnonzero(slots):
            if next_episode < len(seeds):
                running[i] = _Running(next_episode, frames=[] if render else None)
                last_seed[i] = seeds[next_episode]
                next_episode += 1
            else:
                running[i] = None
            reset_seeds[i] = last_seed[i]
        obs, _ = vec.reset(seed=reset_seeds, options={"reset_mask": slots.copy()})
        for i in np.flatnonzero(slots):
            if running[i] is not None:
                running[i].obs.append(np.array(obs[i]))
                if render:
                    running[i].frames.append(vec.envs[i].render())
        controller.reset(slots, obs, reset_seeds)
        return obs

    obs = start(np.ones(k, dtype=bool))
    while any(r is not None for r in running):
        active = np.array([r is not None for r in running])
        actions = np.array(controller.act(obs, active), dtype=np.float32)  # own copy: rows are kept
        if not np.isfinite(actions[active]).all():
            raise UserError("the policy produced a non-finite action (NaN or Inf); the checkpoint may be broken")
        obs, rewards, terminated, truncated, info = vec.step(actions)
        success = info.get("is_success", np.zeros(k, dtype=bool))
        done = terminated | truncated
        obs_rows = obs.copy()  # one copy per step; the slots keep views of its rows
        for i in np.flatnonzero(active):
            r = running[i]
            r.actions.append(actions[i])
            r.rewards.append(rewards[i])
            r.success.append(success[i])
            r.obs.append(obs_rows[i])
            if render:
                r.frames.append(vec.envs[i].render())
            if done[i]:
                trajectory = Trajectory(
                    seed=seeds[r.episode], obs=np.stack(r.obs), actions=np.stack(r.actions),
                    rewards=np.asarray(r.rewards, dtype=np.float64), success=np.asarray(r.success, dtype=bool),
                    terminated=bool(terminated[i]), truncated=bool(truncated[i]), frames=r.frames)
                results[r.episode] = trajectory
                if on_episode is not None:
                    on_episode(trajectory)
        if done.any():
            obs = start(done)
    assert all(t is not None for t in results)
    return results
