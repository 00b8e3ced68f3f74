"""Collect expert demonstrations of a task into one HDF5 file (robomimic layout, see :mod:`demos.hdf5`).

Episode ``i`` is reset with seed ``seed + i``. With ``noise = sigma > 0`` the env executes the
expert action plus Gaussian noise of scale ``sigma`` (clipped to the action bounds) while the file
records the clean expert action at the visited state as the label: noise injection (DART; see also
arXiv 2507.09061), so the demos cover states slightly off the expert's path, labelled with how the
expert recovers from them. Episodes run in the toolkit's one rollout loop (:mod:`envs.rollout`, one
env), which evaluation uses too. Episode ``i`` draws its noise from its own ``np.random.Generator``
seeded with ``(seed + i, NOISE_STREAM)``: the same seed gives the same file, and the first ``k``
episodes of a longer collection equal a collection of ``k``. The file appears only when complete.

``success_only``: episodes are attempted with seeds ``seed + 0, seed + 1, ...`` (noise as above) and
only successful ones are kept, until ``episodes`` succeed or ``max_attempts`` have been run (then a
:class:`UserError`, and no file). The kept episodes are ``demo_0 ..`` in attempt order with their
reset seeds, so the gaps between seeds are the dropped ones; the file's ``dopr_meta`` records
``attempts``, ``dropped`` and ``dropped_seeds``. For experts that sometimes fail (the Walker2d-v5
expert falls in about one episode in five), where BC should imitate only what works.

Observations are stored as float32: the flat state under ``flat`` and the task's named parts of it
(``robot_state``, ...) beside it. With ``cameras`` the env renders them at ``image_size`` (width,
height) after every reset and step, and each is stored as ``<camera>_image``, uint8 ``(T, H, W, 3)``;
rendering reads the simulation without changing it, so the states and actions are the same with
and without cameras. For tasks whose observations are float64 (the gymnasium
locomotion tasks) the label is the expert's action at the float64 observation, so re-querying the
expert on the stored float32 one can differ in the last bits; for float32 tasks it is identical.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import closing
from functools import partial
from typing import Any, Iterable, Iterator, Sequence

import gymnasium
import numpy as np
from tqdm import tqdm

import envs
from demos.episode import Episode, default_split, make_episode
from demos.hdf5 import ENV_TYPE, IMAGE_SUFFIX, atomic_hdf5, demo_name, write_episode, write_index
from dopr_robot.errors import UserError
from envs.rollout import ExpertController, Trajectory, run_episodes

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
    attempts: int = 0  # episodes run (= episodes unless success_only)
    dropped_seeds: tuple[int, ...] = ()  # reset seeds of the failed episodes left out (success_only)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def __str__(self) -> str:
        dropped = f", dropped {len(self.dropped_seeds)} failed of {self.attempts} attempts" if self.attempts > self.episodes else ""
        return (
            f"wrote {self.episodes} episodes of {self.task} ({self.transitions} transitions, "
            f"success {100 * self.success_rate:.1f}%{dropped}) to {self.path} in {self.seconds:.1f} s"
        )


def toolkit_version() -> str:
    """The installed dopr-robot version (``demos`` may not import ``dopr_robot`` itself)."""
    try:
        return importlib.metadata.version("dopr-robot")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_max_attempts(episodes: int) -> int:
    """The cap on attempts of a success-only collection of ``episodes``."""
    return 3 * episodes + 10


def _is_count(value: Any, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= least


def _check_arguments(episodes: int, seed: int, noise: float, out: Path, overwrite: bool, success_only: bool,
                     max_attempts: int | None) -> None:
    # The ranges are CollectConfig's to refuse, with the option a user typed; here a bad value is a
    # caller's mistake, named by parameter. The destination is checked here: it is what the file system holds.
    if not _is_count(episodes, 1):
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    if max_attempts is not None:
        if not success_only:
            raise ValueError("max_attempts applies only with success_only=True (otherwise every attempt is kept)")
        if not _is_count(max_attempts, episodes):
            raise ValueError(f"max_attempts must be an integer >= episodes ({episodes}), got {max_attempts!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(noise, (int, float, np.floating)) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (the std of the action noise), got {noise!r}")
    if out.is_dir():
        raise UserError(f"{out} is a directory; --out must be a file path such as {out / 'demos.hdf5'}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite to replace it")


class NoisyExpert:
    """The expert in the rollout loop with noise injection: each slot executes the expert's action plus
    Gaussian noise of scale ``noise`` (clipped to the action bounds), drawn from the episode's own
    generator seeded ``(reset seed, NOISE_STREAM)``; ``labels`` hold the clean expert actions."""

    def __init__(self, expert: envs.Expert, action_space: gymnasium.spaces.Box, noise: float, num_envs: int):
        self.clean = ExpertController(expert, action_space.shape[0])
        self.low, self.high, self.dtype, self.noise = action_space.low, action_space.high, action_space.dtype, noise
        self.generators: list[np.random.Generator | None] = [None] * num_envs
        self.labels = np.zeros((num_envs, action_space.shape[0]), dtype=np.float32)

    def reset(self, slots: np.ndarray, obs: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        for i in np.flatnonzero(slots):
            seed = None if seeds is None else seeds[i]
            self.generators[i] = None if seed is None else np.random.default_rng([seed, NOISE_STREAM])

    def act(self, obs: np.ndarray, active: np.ndarray) -> np.ndarray:
        self.labels = self.clean.act(obs, active)
        if self.noise == 0:
            return self.labels
        draws = np.zeros(self.labels.shape)  # (K, A); each active slot's row from its episode's generator
        for i in np.flatnonzero(active):
            draws[i] = self.generators[i].standard_normal(self.labels.shape[1])
        return np.clip(self.labels + self.noise * draws, self.low, self.high).astype(self.dtype)


def expert_episodes(env: gymnasium.Env, expert: envs.Expert, seeds: Iterable[int], noise: float
                    ) -> Iterator[Trajectory]:
    """The expert's episodes from ``env.reset(seed)`` for each seed in turn (read lazily; stop when
    you have enough), each until terminated or truncated, in the loop of :mod:`envs.rollout` with
    one env; ``labels`` hold the clean expert action at each visited state. Closes ``env``."""
    controller = partial(NoisyExpert, expert, env.action_space, float(noise))
    with closing(run_episodes(lambda: env, controller, seeds, num_envs=1)) as runs:
        for _, trajectory in runs:
            yield trajectory


def to_episode(name: str, trajectory: Trajectory) -> tuple[Episode, np.ndarray]:
    """The episode to store (labels as actions, done on the last step; its obs the flat state, and
    the camera images of dict observations) and its next flat observations ``(T, D)``."""
    dones = np.zeros(trajectory.length, dtype=bool)
    dones[-1] = True
    states = trajectory.states
    images = {}
    if isinstance(trajectory.obs, dict):
        images = {key: value[:-1] for key, value in trajectory.obs.items() if key.endswith(IMAGE_SUFFIX)}
    episode = make_episode(name, states[:-1], trajectory.labels, trajectory.rewards, dones,
                           trajectory.success, seed=trajectory.seed, images=images)
    return episode, states[1:]


def collect(
    task: str,
    episodes: int,
    out: str | os.PathLike,
    seed: int = 0,
    noise: float = 0.0,
    *,
    overwrite: bool = False,
    success_only: bool = False,
    max_attempts: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    version: str | None = None,
    cameras: Sequence[str] = (),
    image_size: Sequence[int] = (64, 64),
) -> CollectResult:
    """Run ``task``'s expert for ``episodes`` episodes (seeds ``seed .. seed + episodes - 1``) and write
    them to ``out`` (see the module docstring for noise and seeding).

    ``success_only``: keep only successful episodes, attempting seeds ``seed, seed + 1, ...`` until
    ``episodes`` have succeeded; more than ``max_attempts`` (default :func:`default_max_attempts`)
    raises :class:`UserError`. ``env_kwargs`` go to the env constructor and into the file's
    ``env_args``; ``version`` is the toolkit version recorded in the file (default: the installed
    package's). ``cameras`` (``envs.task_spec(task).cameras``) are rendered at ``image_size`` (width,
    height) and stored as images. ``out`` must not exist unless ``overwrite``. Returns counts and timing; the file
    appears only once it is complete.
    """
    out = Path(out)
    _check_arguments(episodes, seed, noise, out, overwrite, success_only, max_attempts)
    if max_attempts is None:
        max_attempts = default_max_attempts(episodes) if success_only else episodes
    spec = envs.task_spec(task)
    if not spec.available:
        raise UserError(f"task {spec.name} is unavailable: {spec.unavailable_reason}")
    env_kwargs = dict(env_kwargs or {})
    cameras = envs.check_cameras(spec.name, cameras, spec.cameras)
    image_size = envs.check_image_size(image_size)
    try:
        env = envs.make(spec.name, cameras=cameras, image_size=image_size, **env_kwargs)
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
        "success_only": bool(success_only),
        "version": version if version is not None else toolkit_version(),
    }
    if cameras:
        meta |= {"cameras": list(cameras), "image_size": list(image_size)}
    env_args = {"env_name": spec.name, "env_kwargs": env_kwargs, "type": ENV_TYPE}

    start = time.perf_counter()
    runs = expert_episodes(env, expert, range(seed, seed + max_attempts), noise)
    # closing(env): the loop closes it too, but not when the destination is refused before it starts;
    # the bar opens after the destination is checked, so a refusal prints nothing else.
    with closing(env), closing(runs), atomic_hdf5(out, overwrite=overwrite) as file, \
            tqdm(total=episodes, desc=f"collect {spec.name}", unit="episode", disable=not progress) as bar:
        obs_keys = envs.obs_key_slices(spec.name)
        kept = _write_episodes(file, runs, episodes, success_only, bar, obs_keys)
        if len(kept.names) < episodes:
            raise UserError(
                f"--success-only: the {spec.name} expert succeeded in {len(kept.names)} of {kept.attempts} attempts "
                f"(seeds {seed}..{seed + kept.attempts - 1}), short of --episodes {episodes}; raise --max-attempts, "
                "lower --episodes or --noise, or collect without --success-only")
        if success_only:
            meta |= {"attempts": kept.attempts, "dropped": len(kept.dropped), "dropped_seeds": kept.dropped}
        train, valid = default_split(episodes)
        write_index(file, kept.names, train, valid, kept.transitions, env_args, meta)
    return CollectResult(out, spec.name, episodes, kept.transitions, kept.successes, time.perf_counter() - start,
                         kept.attempts, tuple(kept.dropped))


@dataclass
class _Kept:
    """What a collection has written and dropped so far."""

    names: list[str] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)  # reset seeds of the failed episodes left out
    attempts: int = 0
    transitions: int = 0
    successes: int = 0


def _write_episodes(file: Any, runs: Iterator[Trajectory], episodes: int, success_only: bool, bar: tqdm,
                    obs_keys: dict[str, Any] | None = None) -> _Kept:
    """Write the episodes of ``runs`` in turn (only the successful ones with ``success_only``) until
    ``episodes`` are written or ``runs`` ends; ``obs_keys``: the named parts of the flat state."""
    kept = _Kept()
    for trajectory in runs:
        kept.attempts += 1
        episode, next_obs = to_episode(demo_name(len(kept.names)), trajectory)
        if success_only and not episode.is_success:
            kept.dropped.append(episode.seed)
        else:
            write_episode(file, episode, next_obs, obs_keys)
            kept.names.append(episode.name)
            kept.transitions += len(episode)
            kept.successes += bool(episode.is_success)
            bar.update()
        postfix = {"success": f"{kept.successes}/{len(kept.names)}"}
        bar.set_postfix(postfix | ({"dropped": len(kept.dropped)} if success_only else {}), refresh=False)
        if len(kept.names) == episodes:
            break
    return kept
