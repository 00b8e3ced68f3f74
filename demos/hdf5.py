"""Demonstrations in HDF5, robomimic layout: writing (atomically) and reading (ours or foreign files).

Layout (what ``dopr-robot collect`` writes; robomimic-style tools read it)::

    data/                       attrs: total (transitions), env_args (JSON), dopr_meta (JSON, ours)
      demo_<i>/                 attrs: num_samples, seed (reset seed), success (episode success)
        obs/<key>               (T, ...) per-step observations; ours: "flat", (T, D) float32, the
                                task's named parts of it (e.g. robot_state, goal), and with cameras
                                <camera>_image, uint8 (T, H, W, 3), chunked per frame, gzip
        next_obs/<key>          (T, ...) the observation after each step (ours; ignored when reading)
        actions                 (T, A) float32
        rewards                 (T,) float32
        dones                   (T,) uint8, 1 at the last step of an episode that terminated or
                                reached its horizon
        success                 (T,) bool, info["is_success"] after each step (ours)
    mask/train, mask/valid      episode names as bytes (a split of whole episodes)

``env_args`` is ``{"env_name": task, "env_kwargs": {...}, "type": "dopr"}``. Foreign files need
only ``data/<demo>/obs/<key>`` and ``data/<demo>/actions``; everything else is optional.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from demos.dataset import DemoDataset
from demos.episode import Episode, check_image, check_image_sizes, default_split, make_episode
from dopr_robot.atomic import atomic_path, check_destination
from dopr_robot.errors import UserError

FLAT_OBS_KEY = "flat"
ENV_TYPE = "dopr"
IMAGE_SUFFIX = "_image"  # robomimic's name for camera observations: <camera>_image


# -- writing ----------------------------------------------------------------------------------------


class _WriteGuard(io.FileIO):
    """The temporary file, handed to h5py as a Python file object so that a failed write (a full disk)
    is seen here as an ``OSError`` instead of inside HDF5.

    HDF5 reports write errors only while releasing objects (hundreds of ignored exceptions) and at
    close, after which the interpreter can crash. So the first failure is recorded and every later
    write is accepted unwritten: HDF5 finishes and closes cleanly, and :func:`atomic_hdf5` then
    discards the file and raises the recorded error.
    """

    failure: OSError | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.failure is None and done < len(view):
            try:
                done += super().write(view[done:]) or 0
            except OSError as err:
                self.failure = err
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        if self.failure is None:
            try:
                return super().truncate(size)
            except OSError as err:
                self.failure = err
        return self.tell() if size is None else size


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike, overwrite: bool = False) -> Iterator[h5py.File]:
    """An HDF5 file open for writing under a temporary name beside ``path``, published onto ``path``
    only when the block completes (:func:`dopr_robot.atomic.atomic_path`): ``path`` is either untouched
    or complete, and no temporary file is left. The destination is checked first (one
    :class:`UserError` line for a directory, a file in the way, no permission, or an existing file
    without ``overwrite``); a full disk while writing is one :class:`UserError` line too."""
    path = check_destination(path, overwrite=overwrite, what="demonstrations file")
    with atomic_path(path) as temp_name, _WriteGuard(temp_name, "r+") as raw:
        with h5py.File(raw, "w") as file:
            yield file
        if raw.failure is not None:
            raise raw.failure


def demo_name(index: int) -> str:
    return f"demo_{index}"


def write_episode(file: h5py.File, episode: Episode, next_obs: np.ndarray | None = None,
                  obs_keys: dict[str, Any] | None = None) -> None:
    """Add ``episode`` as ``data/<episode.name>``: obs under the key ``flat``, its named parts
    ``obs_keys`` (key -> slice or index array of it) beside, and each of its images chunked per frame and compressed."""
    group = file.require_group("data").create_group(episode.name)
    group.create_dataset(f"obs/{FLAT_OBS_KEY}", data=episode.obs)
    for key, part in (obs_keys or {}).items():
        group.create_dataset(f"obs/{key}", data=episode.obs[:, part])
    for key, images in episode.images.items():
        # One frame per chunk: a training window reads frames, not whole episodes.
        group.create_dataset(f"obs/{key}", data=images, chunks=(1, *images.shape[1:]), compression="gzip")
    if next_obs is not None:
        group.create_dataset(f"next_obs/{FLAT_OBS_KEY}", data=np.asarray(next_obs, dtype=np.float32))
    group.create_dataset("actions", data=episode.actions)
    group.create_dataset("rewards", data=episode.rewards)
    group.create_dataset("dones", data=episode.dones.astype(np.uint8))
    if episode.success is not None:
        group.create_dataset("success", data=episode.success)
        group.attrs["success"] = bool(episode.is_success)
    group.attrs["num_samples"] = len(episode)
    if episode.seed is not None:
        group.attrs["seed"] = episode.seed


def write_index(
    file: h5py.File,
    names: Sequence[str],
    train: Sequence[int],
    valid: Sequence[int],
    total: int,
    env_args: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """The file-level part: ``data`` attributes and ``mask/train``, ``mask/valid`` (episode names)."""
    data = file.require_group("data")
    data.attrs["total"] = int(total)
    if env_args is not None:
        data.attrs["env_args"] = json.dumps(env_args, sort_keys=True)
    if meta is not None:
        data.attrs["dopr_meta"] = json.dumps(meta, sort_keys=True)
    for split, indices in (("train", train), ("valid", valid)):
        file.create_dataset(f"mask/{split}", data=np.array([names[i].encode() for i in indices], dtype="S"))


def save(
    path: str | os.PathLike,
    episodes: Sequence[Episode],
    *,
    task: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``episodes`` to ``path`` atomically in the layout above (default split when ``split`` is None)."""
    train, valid = split if split is not None else default_split(len(episodes))
    env_args = None if task is None else {"env_name": task, "env_kwargs": dict(env_kwargs or {}), "type": ENV_TYPE}
    with atomic_hdf5(path, overwrite=overwrite) as file:
        for episode in episodes:
            write_episode(file, episode)
        names = [episode.name for episode in episodes]
        write_index(file, names, train, valid, sum(len(e) for e in episodes), env_args, meta)


# -- reading ----------------------------------------------------------------------------------------


def _natural_key(name: str) -> tuple[str, int, str]:
    """``demo_2`` before ``demo_10`` (robomimic sorts demos by their number)."""
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2)), "") if match else (name, -1, name)


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_attr(group: h5py.Group, key: str) -> dict[str, Any] | None:
    """A JSON attribute as a dict, or None when absent or not a JSON object."""
    if key not in group.attrs:
        return None
    try:
        value = json.loads(_attr_text(group.attrs[key]))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _default_obs_keys(obs_group: h5py.Group) -> list[str]:
    """``flat`` in our files (the named parts beside it repeat it); else every low-dimensional key, sorted."""
    if isinstance(obs_group.get(FLAT_OBS_KEY), h5py.Dataset):
        return [FLAT_OBS_KEY]
    return sorted(key for key, item in obs_group.items() if isinstance(item, h5py.Dataset) and item.ndim == 2)


def _obs_item(path: str, name: str, obs_group: h5py.Group, key: str) -> h5py.Dataset:
    item = obs_group.get(key)
    if not isinstance(item, h5py.Dataset):
        available = ", ".join(sorted(obs_group.keys())) or "none"
        raise UserError(f"{path}: {name} has no observation key {key!r}; available keys: {available}")
    return item


def _read_obs(path: str, name: str, obs_group: h5py.Group, obs_keys: list[str]
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The low-dimensional keys of ``obs_keys`` concatenated ``(T, D)``, and the image keys by key."""
    parts, images = [], {}
    for key in obs_keys:
        item = _obs_item(path, name, obs_group, key)
        if key.endswith(IMAGE_SUFFIX):
            images[key] = check_image(f"{name} of {path}", key, item[()])
            continue
        if item.ndim > 2:
            raise UserError(
                f"{path}: observation key {key!r} holds images or other multi-dimensional data "
                f"(per-step shape {item.shape[1:]}); choose low-dimensional obs_keys, or name camera "
                f"images <camera>{IMAGE_SUFFIX} (uint8, (T, H, W, 3))"
            )
        array = item[()]
        parts.append(array.reshape(len(array), int(np.prod(array.shape[1:]))).astype(np.float32, copy=False))
    check_image_sizes(f"{path}: {name}", images)
    lengths = {part.shape[0] for part in [*parts, *images.values()]}
    if len(lengths) > 1:
        raise UserError(f"{path}: the observation keys of {name} have different lengths {sorted(lengths)}")
    length = lengths.pop() if lengths else 0
    obs = np.concatenate(parts, axis=1) if parts else np.zeros((length, 0), np.float32)
    return obs, images


def image_keys_on_disk(group: h5py.Group) -> dict[str, dict[str, Any]]:
    """Every image-like key (per-step data of 3 dimensions) over the episodes of ``data``: its
    per-step shape, dtype and size on disk in bytes (compressed), read from the file's index only."""
    found: dict[str, dict[str, Any]] = {}
    for episode in group.values():
        obs = episode.get("obs") if isinstance(episode, h5py.Group) else None
        if not isinstance(obs, h5py.Group):
            continue
        for key, item in obs.items():
            if isinstance(item, h5py.Dataset) and item.ndim == 4:
                entry = found.setdefault(key, {"shape": list(item.shape[1:]), "dtype": str(item.dtype), "bytes": 0})
                entry["bytes"] += int(item.id.get_storage_size())
    return found


def _read_mask(path: str, file: h5py.File, names: list[str]) -> tuple[list[int], list[int]]:
    """``mask/train`` and ``mask/valid`` as episode indices; a missing one is the complement of the
    other, both missing gives :func:`~demos.episode.default_split`."""
    mask = file.get("mask")
    given = {}
    if isinstance(mask, h5py.Group):
        position = {name: i for i, name in enumerate(names)}
        for split in ("train", "valid"):
            if split in mask:
                entries = [_attr_text(entry) for entry in np.asarray(mask[split][()]).reshape(-1)]
                unknown = [entry for entry in entries if entry not in position]
                if unknown:
                    raise UserError(
                        f"{path}: mask/{split} names episodes not in data/: {', '.join(unknown[:5])}; "
                        "fix or delete the mask group (a default split is made without it)"
                    )
                given[split] = sorted(position[entry] for entry in entries)
    if not given:
        return default_split(len(names))
    if "train" not in given:
        given["train"] = sorted(set(range(len(names))) - set(given["valid"]))
    if "valid" not in given:
        given["valid"] = sorted(set(range(len(names))) - set(given["train"]))
    return given["train"], given["valid"]


def read_hdf5(path: str, obs_keys: list[str] | None = None) -> DemoDataset:
    """Load a robomimic-layout file (see the module docstring).

    ``obs_keys``: the low-dimensional ones are concatenated in the given order into ``Episode.obs``;
    image keys (``<camera>_image``, uint8 ``(T, H, W, 3)``, one size for all) go to
    ``Episode.images``. By default ``flat`` when the file has it, else every key whose per-step data
    is 1-D, sorted (images are skipped). ``Episode.state`` is ``flat`` when present, else ``obs``.
    Problems in the file raise :class:`UserError`.
    """
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise UserError(
            f"{path} cannot be opened as HDF5 [{err}]; it is probably truncated or corrupt: "
            "copy it again or re-create it with `dopr-robot collect`"
        ) from None
    try:
        with file:
            return _read_open_file(path, file, obs_keys)
    except (OSError, RuntimeError) as err:  # HDF5 errors while reading the data itself
        raise UserError(f"{path} is damaged ({err}); copy it again or re-create it") from None


def _read_open_file(path: str, file: h5py.File, obs_keys: list[str] | None) -> DemoDataset:
    data = file.get("data")
    if not isinstance(data, h5py.Group):
        hint = " (for a Minari dataset pass its directory or id instead)" if "episode_0" in file else ""
        raise UserError(
            f"{path} has no 'data' group, so it is not in the robomimic layout "
            f"(data/demo_<i>/obs/<key>, data/demo_<i>/actions){hint}; "
            f"top-level keys: {', '.join(file.keys()) or 'none'}"
        )
    names = sorted((key for key, item in data.items() if isinstance(item, h5py.Group)), key=_natural_key)
    if not names:
        raise UserError(f"{path}: the 'data' group holds no episodes (expected data/demo_0, data/demo_1, ...)")

    episodes = []
    for name in names:
        group = data[name]
        missing = [key for key in ("obs", "actions") if key not in group]
        if missing:
            raise UserError(
                f"{path}: episode {name} has no {' or '.join(repr(key) for key in missing)}; "
                f"it has: {', '.join(group.keys()) or 'nothing'} (robomimic layout needs obs/<key> and actions)"
            )
        if obs_keys is None:
            obs_keys = _default_obs_keys(group["obs"])
            if not obs_keys:
                raise UserError(
                    f"{path}: {name} has no low-dimensional observation keys (per-step 1-D); "
                    f"keys: {', '.join(group['obs'].keys()) or 'none'}. Pass obs_keys to choose some"
                )
        seed = group.attrs.get("seed")
        obs, images = _read_obs(path, name, group["obs"], obs_keys)
        flat = group["obs"].get(FLAT_OBS_KEY)
        episodes.append(
            make_episode(
                name,
                obs=obs,
                images=images,
                state=flat[()] if isinstance(flat, h5py.Dataset) and flat.ndim == 2 else None,
                actions=group["actions"][()],
                rewards=group["rewards"][()] if "rewards" in group else None,
                dones=group["dones"][()] if "dones" in group else None,
                success=group["success"][()] if "success" in group else None,
                seed=None if seed is None else int(seed),
            )
        )

    env_args = _json_attr(data, "env_args")
    meta = _json_attr(data, "dopr_meta")
    metadata: dict[str, Any] = dict(meta) if meta is not None else {}
    if env_args is not None and env_args.get("type") == ENV_TYPE and meta is not None:
        metadata["format"] = "dopr HDF5, robomimic layout"
    else:
        metadata["format"] = "robomimic-layout HDF5"
        if env_args is not None:
            metadata["env_type"] = env_args.get("type")
    on_disk = image_keys_on_disk(data)
    if on_disk:
        metadata["image_keys"] = on_disk
    train, valid = _read_mask(path, file, names)
    return DemoDataset(
        episodes,
        train,
        valid,
        source=path,
        obs_keys=list(obs_keys),
        task=None if env_args is None or env_args.get("env_name") is None else str(env_args["env_name"]),
        env_kwargs=(env_args or {}).get("env_kwargs") or {},
        metadata=metadata,
    )
