"""Policies in the rollout loop: :class:`PolicyController`, and :func:`rollout` with torch set up for inference.

The loop itself (seeded episodes in K environments at once, :class:`Trajectory`, the
:class:`Controller` protocol, :class:`ExpertController`) is :mod:`envs.rollout`, shared with
demonstration collection; this module adds what needs ``policies`` and torch:
:class:`PolicyController` (observation history padded with the first observation at an episode's
start, as training windows are; action chunks executed ``actions_per_chunk`` steps per prediction)
and :func:`rollout`, the loop run in ``torch.inference_mode`` with ``inference_threads`` intra-op threads.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import gymnasium
import numpy as np
import torch

from dopr_robot.devices import module_device
from dopr_robot.errors import UserError
from envs import rollout as envs_rollout
from envs.rollout import Controller, ExpertController, Trajectory
from policies import Policy

# A batch of K observations: one (K, D) array, or {key: (K, ...)} from an env made with cameras.
Observations = Union[np.ndarray, Mapping[str, np.ndarray]]

__all__ = ["Controller", "ExpertController", "PolicyController", "Trajectory", "check_actions_per_chunk", "rollout"]


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

    Dict observations (an env made with cameras): the policy's low-dim observation is the
    concatenation of ``obs_keys`` (its image keys left out; none given: the ``"flat"`` state), in the
    order the training data used, and each of the policy's image keys gets an image history
    ``(K, H, h, w, 3)`` uint8 beside it, padded and shifted the same way.
    """

    def __init__(self, policy: Policy, num_envs: int, actions_per_chunk: int = 1, obs_keys: Sequence[str] = ()):
        check_actions_per_chunk(actions_per_chunk, policy.chunk)
        self.policy, self.actions_per_chunk = policy, actions_per_chunk
        self.device = module_device(policy)
        self.obs_keys = low_dim_keys(policy, obs_keys)
        self.history = np.zeros((num_envs, policy.history, policy.obs_dim), dtype=np.float32)  # (K, H, D) raw
        self.images = {key: np.zeros((num_envs, policy.history, *shape), dtype=np.uint8)  # (K, H, h, w, 3) each
                       for key, shape in policy.image_shapes.items()}
        self.plan = np.zeros((num_envs, policy.chunk, policy.act_dim), dtype=np.float32)  # (K, C, A)
        self.executed = np.full(num_envs, actions_per_chunk)  # actions taken from the current plan
        self.fresh = np.zeros(num_envs, dtype=bool)  # history just filled by reset(): act() must not append
        self.slots = np.arange(num_envs)
        # Each slot's sampling noise, seeded by its episode's reset seed (None: torch's global RNG).
        self.generators: list[torch.Generator | None] = [None] * num_envs

    def reset(self, slots: np.ndarray, obs: Observations, seeds: Sequence[int | None] | None = None) -> None:
        low_dim, images = self._split(obs)
        self.history[slots] = low_dim[slots, None, :]
        for key, buffer in self.images.items():
            buffer[slots] = images[key][slots, None]
        self.executed[slots] = self.actions_per_chunk
        self.fresh |= slots
        for i in np.flatnonzero(slots):
            seed = None if seeds is None else seeds[i]
            self.generators[i] = None if seed is None else torch.Generator().manual_seed(int(seed))

    def act(self, obs: Observations, active: np.ndarray) -> np.ndarray:
        advance = ~self.fresh  # slots whose newest observation is not in the history yet
        low_dim, images = self._split(obs)
        for buffer, newest in [(self.history, low_dim), *((self.images[key], images[key]) for key in self.images)]:
            if self.policy.history > 1:
                buffer[advance, :-1] = buffer[advance, 1:]
            buffer[advance, -1] = newest[advance]
        self.fresh[:] = False
        need = active & (self.executed >= self.actions_per_chunk)
        if need.all():  # the usual case: every slot re-plans, no gather needed
            self.plan[:] = self._predict(need, self.generators)
            self.executed[:] = 0
        elif need.any():
            self.plan[need] = self._predict(need, [self.generators[i] for i in np.flatnonzero(need)])
            self.executed[need] = 0
        actions = self.plan[self.slots, np.minimum(self.executed, self.policy.chunk - 1)]
        self.executed[active] += 1
        return actions

    def _split(self, obs: Observations) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        """(K, D) low-dim observations and {key: (K, h, w, 3)} images of a batch of observations."""
        if not isinstance(obs, Mapping):
            if self.images:
                raise UserError(f"the policy sees images {list(self.images)} but the environment gives flat "
                                "observations: make it with the cameras of the training data")
            return obs, {}
        missing = [key for key in [*self.obs_keys, *self.images] if key not in obs]
        if missing:
            raise UserError(f"the policy reads observation key(s) {', '.join(missing)} that the environment does not "
                            f"give (it gives {', '.join(obs)}); make it with the cameras of the training data")
        return low_dim_observation(obs, self.obs_keys), obs

    def _predict(self, rows: np.ndarray, generators: list[torch.Generator | None]) -> np.ndarray:
        """Chunks ``(B, C, A)`` for the histories of slots ``rows`` (bool ``(K,)``): one batched forward
        on the policy's device, row i's noise (if any) from ``generators[i]``."""
        every = rows.all()  # no gather: the buffers go as they are
        history = self.history if every else self.history[rows]
        images = {key: torch.from_numpy(buffer if every else buffer[rows]).to(self.device)
                  for key, buffer in self.images.items()}
        return self.policy.predict(torch.from_numpy(history).to(self.device), generator=generators,
                                   **({"images": images} if images else {})).cpu().numpy()


def low_dim_keys(policy: Policy, obs_keys: Sequence[str]) -> list[str]:
    """The keys of dict observations that make up the policy's low-dim observation, in order:
    ``obs_keys`` (the training data's) without its image keys; none: the flat state."""
    return [key for key in obs_keys if key not in policy.image_shapes] or ["flat"]


def low_dim_observation(obs: Mapping[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """``(N, D)``: the ``(N, ...)`` arrays of ``keys`` side by side (a single key as it is)."""
    if len(keys) == 1:
        return obs[keys[0]]
    return np.concatenate([obs[key].reshape(len(obs[key]), -1) for key in keys], axis=1)


def check_actions_per_chunk(actions_per_chunk: int, chunk: int) -> None:
    if not 1 <= actions_per_chunk <= chunk:
        raise UserError(f"--actions-per-chunk must be between 1 and the policy's chunk ({chunk}), got {actions_per_chunk}")


def rollout(make_env: Callable[[], gymnasium.Env], controller_factory: Callable[[int], Controller],
            seeds: Sequence[int], num_envs: int, render: bool = False,
            on_episode: Callable[[Trajectory], None] | None = None, inference_threads: int = 1) -> list[Trajectory]:
    """:func:`envs.rollout.rollout` (one episode per seed, trajectories in seed order) in
    ``torch.inference_mode``, with ``inference_threads`` intra-op threads meanwhile (restored after)."""
    threads = torch.get_num_threads()
    # One intra-op thread: a batch of K observations is too small to split, and on a busy 2-core
    # machine OpenMP's spin-waiting made a 16-row MLP call ~170x slower with 2 threads (160 ms vs 0.9 ms).
    torch.set_num_threads(inference_threads)
    try:
        with torch.inference_mode():
            return envs_rollout.rollout(make_env, controller_factory, seeds, num_envs, render, on_episode)
    finally:
        torch.set_num_threads(threads)
