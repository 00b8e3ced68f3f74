"""The episode schema every source is converted to, its validation, and the default train/valid split.

Whatever a dataset came from (``dopr-robot collect``, a robomimic-layout HDF5 file, a Minari
dataset), it ends up as a list of :class:`Episode` that passed :func:`validate_episodes`, so the
rest of the toolkit can rely on the shapes and dtypes below without checking again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dopr_robot.errors import UserError

# The default split holds out the last 1/VALID_DIVISOR of the episodes (at least one) for validation.
VALID_DIVISOR = 10


@dataclass(frozen=True, eq=False)
class Episode:
    """One demonstration of ``T`` steps.

    ``obs[t]`` is the observation the action ``actions[t]`` was chosen at; ``rewards[t]``, ``dones[t]``
    and ``success[t]`` describe the step that followed. ``dones[t]`` is True only at the last step
    of an episode that terminated or reached its horizon (robomimic's convention). ``success`` is the
    per-step ``info["is_success"]`` when the source recorded it, else None; the episode counts as a
    success when it holds on the final step. ``seed`` is the reset seed when known.

    ``obs`` is the policy's low-dimensional observation (the chosen keys, concatenated); ``images``
    its camera images by key, uint8 ``(T, H, W, 3)`` (empty without cameras); ``state`` the
    privileged flat state ``(T, S)`` that experts act on and the compounding-error metrics measure
    (the file's ``flat`` key when present, else ``obs``).
    """

    obs: np.ndarray  # (T, D) float32
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) bool
    success: np.ndarray | None  # (T,) bool
    seed: int | None
    name: str
    state: np.ndarray | None = None  # (T, S) float32; None given means obs
    images: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (T, H, W, 3) uint8

    def __post_init__(self) -> None:
        if self.state is None:
            object.__setattr__(self, "state", self.obs)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def is_success(self) -> bool | None:
        """Whether the episode succeeded (``success`` on its final step), None when unrecorded."""
        if self.success is None or len(self.success) == 0:
            return None
        return bool(self.success[-1])


def make_episode(
    name: str,
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray | None = None,
    dones: np.ndarray | None = None,
    success: np.ndarray | None = None,
    seed: int | None = None,
    state: np.ndarray | None = None,
    images: dict[str, np.ndarray] | None = None,
) -> Episode:
    """An :class:`Episode` with the schema's dtypes and 2-D obs/actions, checked by :func:`check_episode`.

    Missing ``rewards`` become zeros and missing ``dones`` all False (unknown episode end). A 1-D
    ``actions`` (one scalar action per step) becomes ``(T, 1)``; so does a 1-D ``obs``. ``state``
    (default: ``obs``) must be ``(T, S)``; each of ``images`` uint8 ``(T, H, W, 3)``, all one size.
    """
    obs = np.asarray(obs)
    actions = np.asarray(actions)
    if obs.ndim == 1:
        obs = obs[:, None]
    if actions.ndim == 1:
        actions = actions[:, None]
    length = actions.shape[0]
    rewards = np.zeros(length, np.float32) if rewards is None else np.asarray(rewards)
    dones = np.zeros(length, bool) if dones is None else np.asarray(dones)
    if actions.ndim != 2:
        raise UserError(f"episode {name}: actions must be (T, A) per episode, got shape {actions.shape}")
    if obs.ndim != 2:
        raise UserError(f"episode {name}: observations must be (T, D) per episode, got shape {obs.shape}")
    state = obs if state is None else np.asarray(state)
    if state.ndim != 2:
        raise UserError(f"episode {name}: the state must be (T, S) per episode, got shape {state.shape}")
    images = {key: check_image(name, key, value) for key, value in (images or {}).items()}
    check_image_sizes(name, images)
    per_step = (("obs", obs), ("state", state), ("rewards", rewards), ("dones", dones), ("success", success),
                *images.items())
    for key, array in per_step:
        if array is not None and array.shape[0] != length:
            raise UserError(
                f"episode {name}: {key} has {array.shape[0]} steps but actions has {length}; "
                "every per-step array of an episode must have the same length"
            )
    for key, array in (("rewards", rewards), ("dones", dones), ("success", success)):
        if array is not None and array.ndim != 1:
            raise UserError(f"episode {name}: {key} must be one value per step, got shape {array.shape}")
    episode = Episode(
        obs=np.ascontiguousarray(obs, dtype=np.float32),
        actions=np.ascontiguousarray(actions, dtype=np.float32),
        rewards=np.ascontiguousarray(rewards, dtype=np.float32),
        dones=np.ascontiguousarray(dones, dtype=bool),
        success=None if success is None else np.ascontiguousarray(success, dtype=bool),
        seed=None if seed is None else int(seed),
        name=name,
        state=np.ascontiguousarray(state, dtype=np.float32),
        images=images,
    )
    check_episode(episode)
    return episode


def check_image(episode: str, key: str, images: np.ndarray) -> np.ndarray:
    """``images`` if it is uint8 ``(T, H, W, 3)``, else one UserError line naming the key."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"episode {episode}: image key {key!r} holds {images.dtype} {images.shape}; expected uint8 "
                        "(T, H, W, 3) images (channel last, as robomimic stores them)")
    return images


def check_image_sizes(where: str, images: dict[str, np.ndarray]) -> None:
    """All cameras of one dataset must share one image size (one UserError line naming them otherwise)."""
    sizes = {key: tuple(value.shape[1:3]) for key, value in images.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{key} {h}x{w}" for key, (h, w) in sizes.items())
        raise UserError(f"{where}: cameras of different sizes ({listed}, height x width); expected one size for "
                        "every image key (re-render them at one size, or choose keys of one size)")


def check_episode(episode: Episode) -> None:
    """Refuse an empty episode or one with NaN/Inf values (naming the episode, the key and the step)."""
    if len(episode) == 0:
        raise UserError(f"episode {episode.name} has no steps (length 0); remove it from the dataset or re-collect it")
    for key in ("obs", "state", "actions", "rewards"):
        array = getattr(episode, key)
        finite = np.isfinite(array)
        if not finite.all():
            step = int(np.argwhere(~finite)[0][0])
            raise UserError(
                f"episode {episode.name}: {key} contains NaN or Inf (first at step {step}); "
                "fix or drop that episode before training"
            )


def validate_episodes(episodes: list[Episode], source: str) -> None:
    """Refuse an empty dataset, or observation/action sizes that differ between episodes."""
    if not episodes:
        raise UserError(f"{source} contains no episodes; collect some with `dopr-robot collect`")
    first = episodes[0]
    for episode in episodes:
        check_episode(episode)
        for key, label in (("obs", "observation"), ("actions", "action")):
            size, expected = getattr(episode, key).shape[1], getattr(first, key).shape[1]
            if size != expected:
                raise UserError(
                    f"{source}: episode {episode.name} has {label} size {size} but episode {first.name} "
                    f"has {expected}; all episodes must share sizes (select matching obs_keys or split the file)"
                )
        shapes = {key: value.shape[1:] for key, value in episode.images.items()}
        expected_shapes = {key: value.shape[1:] for key, value in first.images.items()}
        if shapes != expected_shapes:
            raise UserError(f"{source}: episode {episode.name} has images {shapes} but episode {first.name} has "
                            f"{expected_shapes}; every episode needs the same image keys at one size")


def default_split(num_episodes: int) -> tuple[list[int], list[int]]:
    """Whole episodes: the last ``max(1, N // 10)`` validate when there are 2 or more, the rest train.

    Deterministic and by position, so a file's split never depends on a random draw; collection
    seeds run in episode order, so validation episodes have the highest reset seeds.
    """
    if num_episodes < 2:
        return list(range(num_episodes)), []
    num_valid = max(1, num_episodes // VALID_DIVISOR)
    return list(range(num_episodes - num_valid)), list(range(num_episodes - num_valid, num_episodes))
