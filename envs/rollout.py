"""The one rollout loop: seeded episodes in K environments at once, one batched controller call per step.

Demonstration collection (:mod:`demos.collector`) and closed-loop evaluation
(:mod:`dopr_robot.evaluate`) both run their episodes here.

``run_episodes(make_env, controller_factory, seeds, num_envs)`` runs episode ``i`` from
``env.reset(seed=seeds[i])`` in whichever of K environments (slots) is free, and yields
``(i, trajectory)`` as each episode ends. ``seeds`` may be any iterable, read one seed at a time as
a slot frees up, and the caller may stop early (a collection that keeps only successful episodes
stops once it has enough). :func:`rollout` runs a list of seeds to the end and returns one
:class:`Trajectory` per seed, in seed order. Each episode runs from its reset to the step on which
it terminated or truncated.

Each slot is reset by this loop with its episode's seed when the episode starts, so episode i faces
the same initial state for every K, and two controllers run with the same seeds face the same
initial states (a gymnasium vector env's autoreset would reset a finished env with no seed, from
whatever its RNG holds). The slots are plain envs stepped in turn rather than a
``gymnasium.vector.SyncVectorEnv``: the same steps, without its per-step merging of info dicts and
observation buffers, which cost about 15% of a one-env collection. A slot left without an episode
near the end idles: it is not stepped, and its last observation stays in the batch.

A :class:`Controller` turns a batch of observations into a batch of actions and keeps per-slot
memory; :class:`ExpertController` is the task's expert, batched. A controller that executes something
other than what it means (an expert with exploration noise) also says what it meant: a
:class:`LabellingController`'s ``labels``, recorded as the trajectory's ``labels``.

Observations are arrays, or dicts of arrays for envs made with cameras (a ``Dict`` space, see
:mod:`envs.cameras`): then the controller gets ``{key: (K, ...)}``, a trajectory's ``obs`` is
``{key: (T + 1, ...)}``, and its ``states`` are the ``"flat"`` entry, the privileged state that
experts act on and the compounding-error metrics measure (for array observations, the observations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import gymnasium
import numpy as np

from dopr_robot.errors import UserError
from envs.cameras import FLAT_KEY


@dataclass
class Trajectory:
    """One episode. ``T`` = steps taken.

    obs ``(T + 1, D)``: the reset observation, then the one after each step. actions ``(T, A)``: what
    the controller commanded (before the env's own clipping). rewards ``(T,)``. success ``(T,)``:
    ``info["is_success"]`` after each step. frames: ``T + 1`` RGB arrays when rendered, else None.
    labels ``(T, A)``: what a :class:`LabellingController` meant at each step, else None.
    For dict observations ``obs`` is ``{key: (T + 1, ...)}``. states ``(T + 1, S)``: the flat state
    at each step (``obs["flat"]``, or ``obs`` itself when it is an array).
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

    @property
    def states(self) -> np.ndarray:
        return state_of(self.obs)


def state_of(obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
    """The flat state in an observation (or a batch, or a trajectory of them): ``obs["flat"]`` for
    dict observations, else ``obs`` itself."""
    return obs[FLAT_KEY] if isinstance(obs, dict) else obs


class Controller(Protocol):
    """Batched actor over K environments (slots) stepped together."""

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        """Slots ``slots`` (bool ``(K,)``) start new episodes; ``obs`` ``(K, D)`` holds their first observations,
        ``seeds`` (length K) the reset seed of each slot's episode."""

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Actions ``(K, A)`` for observations ``(K, D)``; rows of inactive (idle) slots are not executed."""


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

    def act(self, obs: np.ndarray | dict[str, np.ndarray], active: np.ndarray) -> np.ndarray:
        obs = state_of(obs)  # experts act on the flat state
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
        if isinstance(self.obs[0], dict):
            obs = {key: np.stack([o[key] for o in self.obs]) for key in self.obs[0]}
        else:
            obs = np.stack(self.obs)
        return Trajectory(seed=self.seed, obs=obs, actions=np.stack(self.actions),
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
    if len(seeds) < 1:  # the callers' configs count episodes from 1
        raise ValueError("seeds must hold at least one reset seed, got none")
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
    if num_envs < 1:  # the callers' configs refuse it with the option's name
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    slots: list[gymnasium.Env] = []
    try:
        slots += [make_env() for _ in range(num_envs)]
        yield from _run(slots, controller_factory(num_envs), iter(seeds), render)
    finally:
        for env in slots:
            env.close()


def _run(slots: list[gymnasium.Env], controller: Controller, seeds: Iterator[int], render: bool
         ) -> Iterator[tuple[int, Trajectory]]:
    k = len(slots)
    obs = _batch(slots[0].observation_space, k)  # (K, D) or {key: (K, ...)}: each slot's newest observation
    running: list[_Running | None] = [None] * k
    active = np.zeros(k, dtype=bool)
    live: list[int] = []  # the slots running an episode (np.flatnonzero(active), kept as a list)
    handed_out = 0

    def start(done: list[int]) -> None:
        """Reset slots ``done`` with the next seeds, in slot order; once all are handed out, a slot
        idles (not stepped; its last observation stays in ``obs``)."""
        nonlocal handed_out
        started, reset_seeds = np.zeros(k, dtype=bool), [None] * k
        for i in done:
            seed = next(seeds, None)
            running[i] = None if seed is None else _Running(handed_out, int(seed), frames=[] if render else None)
            if seed is None:
                continue
            handed_out += 1
            _put(obs, i, slots[i].reset(seed=int(seed))[0])
            started[i], reset_seeds[i] = True, int(seed)
            running[i].obs.append(_row(obs, i, copy=True))
            if render:
                running[i].frames.append(slots[i].render())
        active[:] = [r is not None for r in running]
        live[:] = [i for i in range(k) if active[i]]
        if started.any():
            controller.reset(started, obs, reset_seeds)

    start(list(range(k)))
    while live:
        actions = np.array(controller.act(obs, active), dtype=np.float32)  # own copy: rows are kept
        if not np.isfinite(actions if len(live) == k else actions[live]).all():
            raise UserError("the policy produced a non-finite action (NaN or Inf); the checkpoint may be broken")
        labels = getattr(controller, "labels", None)  # a LabellingController's
        labels = None if labels is None else np.array(labels)
        obs = _copy(obs)  # a new (K, D) each step: the episodes keep views of its rows
        done = []
        for i in live:
            r = running[i]
            new, reward, terminated, truncated, info = slots[i].step(actions[i])
            _put(obs, i, new)
            r.actions.append(actions[i])
            if labels is not None:
                r.labels.append(labels[i])
            r.rewards.append(reward)
            r.success.append(bool(info.get("is_success", False)))
            r.obs.append(_row(obs, i))
            if render:
                r.frames.append(slots[i].render())
            if terminated or truncated:
                done.append(i)
                yield r.episode, r.finish(bool(terminated), bool(truncated))
        if done:
            start(done)


# Batches of observations: one (K, ...) array, or {key: (K, ...)} for a Dict space.

def _batch(space: gymnasium.Space, k: int) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(space, gymnasium.spaces.Dict):
        return {key: np.zeros((k, *sub.shape), dtype=sub.dtype) for key, sub in space.spaces.items()}
    return np.zeros((k, *space.shape), dtype=space.dtype)


def _put(batch: np.ndarray | dict[str, np.ndarray], i: int, obs: np.ndarray | dict[str, np.ndarray]) -> None:
    if isinstance(batch, dict):
        for key, array in batch.items():
            array[i] = obs[key]
    else:
        batch[i] = obs


def _row(batch: np.ndarray | dict[str, np.ndarray], i: int, copy: bool = False):
    if isinstance(batch, dict):
        return {key: array[i].copy() if copy else array[i] for key, array in batch.items()}
    return batch[i].copy() if copy else batch[i]


def _copy(batch: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    return {key: array.copy() for key, array in batch.items()} if isinstance(batch, dict) else batch.copy()
