"""Collect expert demonstrations of a task into one HDF5 file (robomimic layout, see :mod:`demos.hdf5`).

Episode ``i`` is reset with seed ``seed + i``. With ``noise = sigma > 0`` the env executes the
expert action plus Gaussian noise of scale ``sigma`` (clipped to the action bounds) while the file
records the clean expert action at the visited state as the label: noise injection (DART; see also
arXiv 2507.09061), so the demos cover states slightly off the expert's path, labelled with how the
expert recovers from them. Episode ``i`` draws its noise from its own ``np.random.Generator``
seeded with ``(seed + i, NOISE_STREAM)``: the same seed gives the same file, and the first ``k``
episodes of a longer collection equal a collection of ``k``. The file appears only when complete.

Observations are stored as float32. For tasks whose observations are float64 (the gymnasium
locomotion tasks) the label is the expert's action at the float64 observation, so re-querying the
expert on the stored float32 one can differ in the last bits; for float32 tasks it is identical.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from tqdm import tqdm

import envs
from demos.episode import Episode, default_split, make_episode
from demos.hdf5 import ENV_TYPE, atomic_hdf5, demo_name, write_episode, write_index
from dopr_robot.errors import UserError

# Second word of every noise generator's seed, so noise streams never coincide with the env's own
# reset randomness (which gymnasium seeds with the plain reset seed).
NOISE_STREAM = 0x6E6F697365  # "noise"


@dataclass(frozen=True)
class CollectResult:
    """What :func:`collect` wrote."""

    path: Path
    task: str
    episodes: int
    transitions: int
    successes: int
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def __str__(self) -> str:
        return (
            f"wrote {self.episodes} episodes of {self.task} ({self.transitions} transitions, "
            f"success {100 * self.success_rate:.1f}%) to {self.path} in {self.seconds:.1f} s"
        )


def toolkit_version() -> str:
    """The installed dopr-robot version (``demos`` may not import ``dopr_robot`` itself)."""
    try:
        return importlib.metadata.version("dopr-robot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _check_arguments(episodes: int, seed: int, noise: float, out: Path, overwrite: bool) -> None:
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise UserError(f"--episodes must be an integer >= 1, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"--seed must be an integer >= 0, got {seed!r}")
    if not isinstance(noise, (int, float, np.floating)) or not math.isfinite(noise) or noise < 0:
        raise UserError(f"--noise must be a finite number >= 0 (the std of the action noise), got {noise!r}")
    if out.is_dir():
        raise UserError(f"{out} is a directory; --out must be a file path such as {out / 'demos.hdf5'}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite to replace it")


def run_episode(
    env: gymnasium.Env,
    expert: envs.Expert,
    name: str,
    seed: int,
    noise: float,
    rng: np.random.Generator | None,
) -> tuple[Episode, np.ndarray]:
    """One episode from ``env.reset(seed=seed)`` until terminated or truncated.

    Returns the episode (labels: the clean expert action at each visited state) and the
    observations after each step ``(T, D)``.
    """
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=seed)
    observations, labels, rewards, dones, successes, next_observations = [], [], [], [], [], []
    while True:
        label = expert.act(obs)
        executed = label if noise == 0 else np.clip(label + noise * rng.standard_normal(label.shape), low, high)
        next_obs, reward, terminated, truncated, info = env.step(executed.astype(env.action_space.dtype))
        observations.append(obs)
        labels.append(label)
        rewards.append(reward)
        dones.append(terminated or truncated)
        successes.append(bool(info["is_success"]))
        next_observations.append(next_obs)
        obs = next_obs
        if terminated or truncated:
            break
    episode = make_episode(name, np.stack(observations), np.stack(labels), np.array(rewards), np.array(dones),
                           np.array(successes), seed=seed)
    return episode, np.stack(next_observations)


def collect(
    task: str,
    episodes: int,
    out: str | os.PathLike,
    seed: int = 0,
    noise: float = 0.0,
    *,
    overwrite: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    version: str | None = None,
) -> CollectResult:
    """Run ``task``'s expert for ``episodes`` episodes (seeds ``seed .. seed + episodes - 1``) and write
    them to ``out`` (see the module docstring for noise and seeding).

    ``env_kwargs`` go to the env constructor and into the file's ``env_args``; ``version`` is the
    toolkit version recorded in the file (default: the installed package's). ``out`` must not exist
    unless ``overwrite``. Returns counts and timing; the file appears only once it is complete.
    """
    out = Path(out)
    _check_arguments(episodes, seed, noise, out, overwrite)
    spec = envs.task_spec(task)
    if not spec.available:
        raise UserError(f"task {spec.name} is unavailable: {spec.unavailable_reason}")
    env_kwargs = dict(env_kwargs or {})
    try:
        env = envs.make(spec.name, **env_kwargs)
    except TypeError as err:
        raise UserError(f"task {spec.name} does not accept env_kwargs {env_kwargs}: {err}") from None
    expert = envs.make_expert(spec.name)
    meta = {
        "created_by": "dopr-robot collect",
        "task": spec.name,
        "expert_kind": spec.expert_kind,
        "noise": float(noise),
        "seed": int(seed),
        "episodes": int(episodes),
        "version": version if version is not None else toolkit_version(),
    }
    env_args = {"env_name": spec.name, "env_kwargs": env_kwargs, "type": ENV_TYPE}

    start = time.perf_counter()
    transitions = successes = 0
    names = []
    try:
        bar = tqdm(total=episodes, desc=f"collect {spec.name}", unit="episode", disable=not progress)
        with atomic_hdf5(out, overwrite=overwrite) as file, bar:
            for i in range(episodes):
                rng = np.random.default_rng([seed + i, NOISE_STREAM]) if noise > 0 else None
                episode, next_obs = run_episode(env, expert, demo_name(i), seed + i, float(noise), rng)
                write_episode(file, episode, next_obs)
                names.append(episode.name)
                transitions += len(episode)
                successes += bool(episode.is_success)
                bar.set_postfix(success=f"{successes}/{i + 1}", refresh=False)
                bar.update()
            train, valid = default_split(episodes)
            write_index(file, names, train, valid, transitions, env_args, meta)
    finally:
        env.close()
    return CollectResult(out, spec.name, episodes, transitions, successes, time.perf_counter() - start)
