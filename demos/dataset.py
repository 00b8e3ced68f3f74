"""A loaded set of demonstrations: episodes, the train/valid split, normalization and training windows.

:class:`DemoDataset` is what :func:`demos.load` returns for every kind of source. Training code
draws ``(history, chunk)`` windows from :meth:`DemoDataset.windows`; their index arrays are built
once, so fetching an item (or a batch, with :meth:`WindowDataset.__getitems__`) is one gather.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch

from demos.episode import Episode, validate_episodes
from demos.history import history_window  # the padding rule evaluation shares
from dopr_robot.errors import UserError

# A dimension whose std over the training episodes is below this is treated as constant: its std is
# reported as 1.0, so normalizing only centres it. A tiny std (a goal coordinate that never changed
# in the demos) would otherwise turn any deviation at evaluation time into a huge network input.
STD_FLOOR = 1e-4


class DemoDataset:
    """Episodes plus what is known about them; built by :func:`demos.load`, never from raw files.

    Attributes:
        episodes: the :class:`~demos.episode.Episode` list, in file order.
        train_indices, valid_indices: episode indices of each split (whole episodes).
        obs_dim, act_dim: sizes of one observation and one action.
        task: the task name from the file (``env_args["env_name"]``, a Minari env id), or None.
        env_kwargs: constructor keyword arguments of that task (empty when unknown).
        obs_keys: the observation keys loaded, in order: the low-dimensional ones concatenated into
            ``obs``, the image keys kept as images.
        image_shapes: image key -> ``(H, W, 3)`` of the episodes' images (empty without images).
        source: the path or Minari id the data came from.
        metadata: what made the data (expert, noise, seed, toolkit version, ...) as far as recorded.
    """

    def __init__(
        self,
        episodes: list[Episode],
        train_indices: list[int],
        valid_indices: list[int],
        *,
        source: str,
        obs_keys: list[str],
        task: str | None = None,
        env_kwargs: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        validate_episodes(episodes, source)
        for split, indices in (("train", train_indices), ("valid", valid_indices)):
            bad = [i for i in indices if not 0 <= i < len(episodes)]
            if bad:
                raise UserError(
                    f"{source}: the {split} split names episode indices {bad} outside 0..{len(episodes) - 1}"
                )
        shared = sorted(set(train_indices) & set(valid_indices))
        if shared:
            names = ", ".join(episodes[i].name for i in shared)
            raise UserError(
                f"{source}: episodes {names} are in both the train and the valid split; fix the file's mask"
            )
        self.episodes = episodes
        self.train_indices = list(train_indices)
        self.valid_indices = list(valid_indices)
        self.obs_dim = int(episodes[0].obs.shape[1])
        self.act_dim = int(episodes[0].actions.shape[1])
        self.task = task
        self.env_kwargs = dict(env_kwargs or {})
        self.obs_keys = list(obs_keys)
        self.source = source
        self.metadata = dict(metadata or {})
        self.image_shapes = {key: tuple(int(n) for n in value.shape[1:]) for key, value in episodes[0].images.items()}

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return (
            f"DemoDataset(source={self.source!r}, episodes={len(self.episodes)}, "
            f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, task={self.task!r})"
        )

    @property
    def num_transitions(self) -> int:
        return sum(len(episode) for episode in self.episodes)

    def split_indices(self, split: str) -> list[int]:
        """Episode indices of ``split`` (``"train"`` or ``"valid"``)."""
        if split == "train":
            return self.train_indices
        if split == "valid":
            return self.valid_indices
        raise UserError(f"unknown split {split!r}; valid splits: train, valid")

    def normalization(self) -> dict[str, np.ndarray]:
        """Per-dimension ``obs_mean, obs_std, act_mean, act_std`` (float32) over the TRAIN episodes.

        Population std (ddof 0), computed in float64; dimensions with std < ``STD_FLOOR`` (1e-4) get
        std 1.0 (centred only), see :data:`STD_FLOOR`.
        """
        if not self.train_indices:
            raise UserError(f"{self.source}: the train split has no episodes, so there is nothing to normalize over")
        stats = {}
        for key, prefix in (("obs", "obs"), ("actions", "act")):
            values = np.concatenate([getattr(self.episodes[i], key) for i in self.train_indices]).astype(np.float64)
            std = values.std(axis=0)
            stats[f"{prefix}_mean"] = values.mean(axis=0).astype(np.float32)
            stats[f"{prefix}_std"] = np.where(std < STD_FLOOR, 1.0, std).astype(np.float32)
        return stats

    @cached_property
    def _flat(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """All episodes concatenated: obs ``(N, D)``, actions ``(N, A)``, and each episode's start offset."""
        lengths = np.array([len(episode) for episode in self.episodes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        obs = torch.from_numpy(np.concatenate([episode.obs for episode in self.episodes]))
        actions = torch.from_numpy(np.concatenate([episode.actions for episode in self.episodes]))
        return obs, actions, offsets

    @cached_property
    def _images(self) -> dict[str, torch.Tensor]:
        """Every episode's images concatenated, uint8 ``(N, H, W, 3)`` per key. The episodes' own arrays
        become views of these, so the images are held once (a copy per episode would double them)."""
        images = {}
        for key in self.image_shapes:
            flat = np.concatenate([episode.images[key] for episode in self.episodes])
            start = 0
            for episode in self.episodes:
                episode.images[key] = flat[start:start + len(episode)]
                start += len(episode)
            images[key] = torch.from_numpy(flat)
        return images

    def windows(self, split: str = "train", history: int = 1, chunk: int = 1) -> WindowDataset:
        """One item per step ``t`` of every episode of ``split``: observations ``t-history+1..t`` and
        actions ``t..t+chunk-1``, padded at the episode edges (see :class:`WindowDataset`)."""
        for name, value in (("history", history), ("chunk", chunk)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UserError(f"{name} must be an integer >= 1, got {value!r}")
        indices = self.split_indices(split)
        if not indices:
            raise UserError(
                f"the {split} split of {self.source} has no episodes ({len(self.episodes)} episode(s) in all); "
                "collect more episodes (the default split validates on the last 10%, at least 1, from 2 episodes on)"
            )
        obs, actions, offsets = self._flat
        lengths = np.array([len(self.episodes[i]) for i in indices], dtype=np.int64)
        starts = offsets[indices]
        episode_of_item = np.repeat(np.asarray(indices, dtype=np.int64), lengths)
        step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        start = np.repeat(starts, lengths)
        length = np.repeat(lengths, lengths)

        past, real = history_window(step, history)  # (M, history) steps t-h+1..t clamped at 0, not padding
        future = step[:, None] + np.arange(chunk)[None, :]  # (M, chunk) steps t..t+c-1
        return WindowDataset(
            obs=obs,
            images=self._images,
            actions=actions,
            obs_index=torch.from_numpy(start[:, None] + past),
            obs_mask=torch.from_numpy(real),
            action_index=torch.from_numpy(start[:, None] + np.minimum(future, length[:, None] - 1)),
            action_mask=torch.from_numpy(future < length[:, None]),
            episode_index=episode_of_item,
            step=step,
        )

    def summary(self) -> str:
        """Plain-text description (what ``dopr-robot inspect`` prints)."""
        lengths = np.array([len(episode) for episode in self.episodes])
        outcomes = [episode.is_success for episode in self.episodes]
        known = [outcome for outcome in outcomes if outcome is not None]
        returns = np.array([float(episode.rewards.sum()) for episode in self.episodes])
        if known:
            success = f"{100.0 * sum(known) / len(known):.1f}% ({sum(known)}/{len(known)} episodes)"
            if len(known) < len(outcomes):
                success += f"; {len(outcomes) - len(known)} episodes without success flags"
        else:
            success = "unknown (no per-step success recorded)"
        task = self.task if self.task is not None else "unknown"
        if self.env_kwargs:
            task += f" {self.env_kwargs}"
        length_range = f"min {lengths.min()}, mean {lengths.mean():.1f}, max {lengths.max()}"
        rows = [
            ("source", f"{self.source} ({self.metadata.get('format', 'unknown format')})"),
            ("task", task),
            ("made by", _made_by(self.metadata)),
            ("episodes", f"{len(self.episodes)} (train {len(self.train_indices)}, valid {len(self.valid_indices)})"),
            ("transitions", f"{int(lengths.sum())} (episode length {length_range})"),
            ("observation", f"{self.obs_dim} (keys: {', '.join(k for k in self.obs_keys if k not in self.image_shapes)})"),
            *_image_rows(self.metadata.get("image_keys", {}), self.image_shapes),
            ("action", str(self.act_dim)),
            ("success", success),
            ("return", f"mean {returns.mean():.3f}, min {returns.min():.3f}, max {returns.max():.3f}"),
        ]
        if self.metadata.get("success_only"):
            rows.insert(-1, ("attempts", _attempts(self.metadata)))  # after the success row
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _image_rows(on_disk: dict[str, dict[str, Any]], loaded: dict[str, tuple[int, ...]]) -> list[tuple[str, str]]:
    """One ``images`` row per image key of the file: per-step shape, dtype, size on disk, and whether loaded."""
    rows = []
    on_disk = on_disk | {key: {"shape": list(shape), "dtype": "uint8"} for key, shape in loaded.items() if key not in on_disk}
    for key, entry in on_disk.items():
        shape = "x".join(str(n) for n in entry.get("shape", []))
        size = f", {entry['bytes'] / 1e6:.2f} MB on disk" if "bytes" in entry else ""
        note = "loaded" if key in loaded else "not loaded (name it in --obs-keys)"
        rows.append(("images" if not rows else "", f"{key} {shape} {entry.get('dtype', '?')}{size}, {note}"))
    return rows


def _attempts(metadata: dict[str, Any]) -> str:
    """What a success-only collection left out: ``N, dropped K failed episodes (success-only): seeds ...``."""
    seeds = [str(seed) for seed in metadata.get("dropped_seeds", [])]
    listed = ", ".join(seeds[:10]) + (f", ... ({len(seeds) - 10} more)" if len(seeds) > 10 else "")
    text = f"{metadata.get('attempts', '?')}, dropped {metadata.get('dropped', len(seeds))} failed episodes (success-only)"
    return text + (f": seeds {listed}" if seeds else "")


def _made_by(metadata: dict[str, Any]) -> str:
    if "expert_kind" in metadata:
        return (
            f"dopr-robot {metadata.get('version', '?')} collect: {metadata['expert_kind']} expert, "
            f"noise {metadata.get('noise', '?')}, seed {metadata.get('seed', '?')}"
        )
    fields = [f"{key} {metadata[key]}" for key in ("algorithm_name", "author", "minari_version") if metadata.get(key)]
    return ", ".join(fields) if fields else "not recorded"


class WindowDataset(torch.utils.data.Dataset):
    """``(history, chunk)`` windows over concatenated episodes, by precomputed index arrays.

    Item ``i`` (step ``t`` of one episode) is a dict of tensors:

    - ``obs`` ``(history, D)`` float32: observations ``t-history+1 .. t``; steps before the episode
      start repeat its first observation;
    - ``obs_mask`` ``(history,)`` bool: False for those padded steps;
    - ``actions`` ``(chunk, A)`` float32: actions ``t .. t+chunk-1``; steps past the episode end
      repeat its last action;
    - ``action_mask`` ``(chunk,)`` bool: False for those padded steps;
    - ``images`` (only when the dataset has images) ``{key: (history, H, W, 3)}`` uint8: the images of
      the observation steps, padded the same way. They stay uint8 here and on the device; the policy
      makes them float.

    ``episode_index[i]`` and ``step[i]`` (NumPy) say which episode and step item ``i`` is.
    A ``DataLoader(windows, batch_size=B)`` fetches each batch with one gather (:meth:`__getitems__`)
    but then collates item by item; about 25x faster is to let the sampler yield whole batches,
    ``DataLoader(windows, batch_size=None, sampler=BatchSampler(RandomSampler(windows), B, False))``,
    since indexing with a list of indices returns the stacked batch (see :meth:`batch`).
    """

    def __init__(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        obs_index: torch.Tensor,
        obs_mask: torch.Tensor,
        action_index: torch.Tensor,
        action_mask: torch.Tensor,
        episode_index: np.ndarray,
        step: np.ndarray,
        images: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.obs = obs  # (N, D) every episode's observations, concatenated
        self.images = dict(images or {})  # key -> (N, H, W, 3) uint8, indexed like obs
        self.actions = actions  # (N, A)
        self.obs_index = obs_index  # (M, history) rows of self.obs per item
        self.obs_mask = obs_mask  # (M, history)
        self.action_index = action_index  # (M, chunk) rows of self.actions per item
        self.action_mask = action_mask  # (M, chunk)
        self.episode_index = episode_index  # (M,)
        self.step = step  # (M,)

    def __len__(self) -> int:
        return int(self.obs_index.shape[0])

    @property
    def device(self) -> torch.device:
        return self.obs.device

    def to(self, device: torch.device | str) -> WindowDataset:
        """The same windows with their tensors on ``device`` (a GPU batch is then gathered there, no
        host-to-device copy of the data per batch); ``episode_index`` and ``step`` stay NumPy."""
        moved = (self.obs, self.actions, self.obs_index, self.obs_mask, self.action_index, self.action_mask)
        return WindowDataset(*(tensor.to(device) for tensor in moved), episode_index=self.episode_index, step=self.step,
                             images={key: images.to(device) for key, images in self.images.items()})

    def batch(self, indices: torch.Tensor | np.ndarray | list[int]) -> dict[str, torch.Tensor]:
        """Items ``indices`` stacked: ``obs`` ``(B, history, D)``, ``obs_mask`` ``(B, history)``,
        ``actions`` ``(B, chunk, A)``, ``action_mask`` ``(B, chunk)``, on the windows' device (indices
        already there cost no copy)."""
        indices = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        return self._gather(indices)

    def _gather(self, indices: torch.Tensor | int) -> dict[str, Any]:
        obs_index = self.obs_index[indices]
        items: dict[str, Any] = {
            "obs": self.obs[obs_index],
            "obs_mask": self.obs_mask[indices],
            "actions": self.actions[self.action_index[indices]],
            "action_mask": self.action_mask[indices],
        }
        if self.images:
            items["images"] = {key: images[obs_index] for key, images in self.images.items()}
        return items

    def __getitem__(self, index: int | list[int] | torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """Item ``index``; a list or 1-D array of indices gives the stacked batch (as :meth:`batch`)."""
        if not isinstance(index, (int, np.integer)) and not (isinstance(index, torch.Tensor) and index.ndim == 0):
            return self.batch(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"window index {index} out of range for {len(self)} items")
        return self._gather(index)

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.batch(indices)
        images = batch.pop("images", {})
        items = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        for i, item in enumerate(items):
            if images:
                item["images"] = {key: value[i] for key, value in images.items()}
        return items
