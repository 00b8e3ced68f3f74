"""The one rollout loop: seeded episodes in K environments at once, one batched controller call per step.

Demonstration collection (:mod:`demos.collector`) and closed-loop evaluation
(:mod:`dopr_robot.evaluate`) both run their episodes here.

``run_episodes(make_env, controller_factory, seeds, num_envs)`` runs episode ``i`` from
``env.reset(seed=seeds[i])`` in whichever of the K slots of a ``gymnasium.vector.SyncVectorEnv`` is
free, and yields ``(i, trajectory)`` as each episode ends. ``seeds`` may be any iterable, read one
seed at a time as a slot frees up, and the caller may stop early (a collection that keeps only
successful episodes stops once it has enough). :func:`rollout` runs a list of seeds to the end and
returns one :class:`Trajectory` per seed, in seed order. Each episode runs from its reset to the
step on which it terminated or truncated.

Autoreset: the vector env is built with ``AutoresetMode.DISABLED`` and this loop resets finished
slots itself (``reset(seed=..., options={"reset_mask": done})``). gymnasium's NEXT_STEP and SAME_STEP
modes reset a finished sub-env with ``reset()`` and no seed, so the next episode would start from
whatever the env's RNG holds, and which initial state an episode gets would depend on K and on
the lengths of the episodes before it. With our own resets, episode i faces the same initial
state for every K, and two controllers run with the same seeds face the same initial states.
Slots left without an episode near the end are reset (with the seed they last ran) and stepped with
the rest, their data dropped: DISABLED mode refuses to step a finished env.

A :class:`Controller` turns a batch of observations into a batch of actions and keeps per-slot
memory; :class:`ExpertController` is the task's expert, batched. A controller that executes something
other than what it means (an expert with exploration noise) also says what it meant: a
:class:`LabellingController`'s ``labels``, recorded as the trajectory's ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import gymnasium
import numpy as np

from dopr_robot.errors import UserError


@dataclass
class Trajectory:
    """One episode. ``T`` = steps taken.

    obs ``(T + 1, D)``: the reset observation, then the one after each step. actions ``(T, A)``: what
    the controller commanded (before the env's own clipping). rewards ``(T,)``. success ``(T,)``:
    ``info["is_success"]`` after each step. frames: ``T + 1`` RGB arrays when rendered, else None.
    labels ``(T, A)``: what a :class:`LabellingController` meant at each step, else None.
    """

    seed: int
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    terminated: bool
    truncated: bool
    frames: list[np.ndarray] | None = None
    labels: np.ndarray | None = None

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


class LabellingController(Protocol):
    """A controller whose ``labels`` ``(K, A)``, set by each ``act``, hold what it meant to do (such as
    the clean expert action) when the actions it returned were something else (that action plus noise).
    The loop reads ``labels`` after every ``act`` of a controller that has the attribute."""

    labels: np.ndarray

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None: ...

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray: ...


class ExpertController:
    """The task's expert: ``expert.act`` on the batch of active rows, no memory."""

    def __init__(self, expert, act_dim: int):
        self.expert, self.act_dim = expert, act_dim

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        pass

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        if active.all():  # the usual case: no gather
            return np.asarray(self.expert.act(obs), dtype=np.float32)
        actions = np.zeros((obs.shape[0], self.act_dim), dtype=np.float32)
        if active.any():
            actions[active] = self.expert.act(obs[active])
        return actions


@dataclass
class _Running:
    """Buffers of the episode a slot is running."""

    episode: int
    seed: int
    obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    success: list = field(default_factory=list)
    frames: list | None = None

    def finish(self, terminated: bool, truncated: bool) -> Trajectory:
        return Trajectory(seed=self.seed, obs=np.stack(self.obs), actions=np.stack(self.actions),
                          rewards=np.asarray(self.rewards, dtype=np.float64),
                          success=np.asarray(self.success, dtype=bool), terminated=terminated, truncated=truncated,
                          frames=self.frames, labels=np.stack(self.labels) if self.labels else None)


def rollout(make_env: Callable[[], gymnasium.Env], controller_factory: Callable[[int], Controller],
            seeds: Sequence[int], num_envs: int, render: bool = False,
            on_episode: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
    """Run one episode per seed in ``min(num_envs, len(seeds))`` envs; trajectories in seed order.

    ``controller_factory(K)`` builds the controller for K slots. ``render``: also keep
    ``env.render()`` frames (the env must have been made with ``render_mode="rgb_array"``).
    ``on_episode`` is called as each episode finishes (progress bars).
    """
    if len(seeds) < 1:
        raise UserError(f"--episodes must be >= 1, got {len(seeds)}")
    results: list[Trajectory | None] = [None] * len(seeds)
    for index, trajectory in run_episodes(make_env, controller_factory, seeds, min(num_envs, len(seeds)), render):
        results[index] = trajectory
        if on_episode is not None:
            on_episode(trajectory)
    assert all(t is not None for t in results)
    return results


def run_episodes(make_env: Callable[[], gymnasium.Env], controller_factory: Callable[[int], Controller],
                 seeds: Iterable[int], num_envs: int, render: bool = False) -> Iterator[tuple[int, Trajectory]]:
    """Yield ``(i, trajectory)`` of the episode from ``seeds[i]`` as each ends (in seed order when
    ``num_envs`` is 1). Seeds are read lazily; closing the generator early closes the envs."""
    if num_envs < 1:
        raise UserError(f"--num-envs must be >= 1, got {num_envs}")
    vec = gymnasium.vector.SyncVectorEnv([make_env] * num_envs, copy=False,
                                         autoreset_mode=gymnasium.vector.AutoresetMode.DISABLED)
    try:
        yield from _run(vec, controller_factory(num_envs), iter(seeds), render)
    finally:
        vec.close()


def _run(vec, controller: Controller, seeds: Iterator[int], render: bool) -> Iterator[tuple[int, Trajectory]]:
    k = vec.num_envs
    running: list[_Running | None] = [None] * k
    last_seed: list[int | None] = [None] * k
    handed_out = 0

    def start(slots: np.ndarray) -> np.ndarray:
        """Reset ``slots``: the next seeds to them in slot order; once all are handed out, a slot idles
        (reset with the seed it last ran, its data dropped)."""
        nonlocal handed_out
        reset_seeds: list[int | None] = [None] * k
        for i in np.flatnonzero(slots):
            seed = next(seeds, None)
            if seed is not None:
                running[i] = _Running(handed_out, int(seed), frames=[] if render else None)
                last_seed[i] = int(seed)
                handed_out += 1
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
        active[:] = [r is not None for r in running]
        return obs

    active = np.zeros(k, dtype=bool)
    obs = start(np.ones(k, dtype=bool))
    while active.any():
        actions = np.array(controller.act(obs, active), dtype=np.float32)  # own copy: rows are kept
        if not np.isfinite(actions).all():  # inactive rows are finite too (Controller.act)
            raise UserError("the policy produced a non-finite action (NaN or Inf); the checkpoint may be broken")
        labels = getattr(controller, "labels", None)  # a LabellingController's
        labels = None if labels is None else np.array(labels)
        obs, rewards, terminated, truncated, info = vec.step(actions)
        success = info.get("is_success", np.zeros(k, dtype=bool))
        done = terminated | truncated
        obs_rows = obs.copy()  # one copy per step; the slots keep views of its rows
        for i in np.flatnonzero(active):
            r = running[i]
            r.actions.append(actions[i])
            if labels is not None:
                r.labels.append(labels[i])
            r.rewards.append(rewards[i])
            r.success.append(success[i])
            r.obs.append(obs_rows[i])
            if render:
                r.frames.append(vec.envs[i].render())
            if done[i]:
                yield r.episode, r.finish(bool(terminated[i]), bool(truncated[i]))
        if done.any():
            obs = start(done)
