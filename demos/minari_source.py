"""Minari datasets as demonstrations, read with the ``minari`` library (the optional ``minari`` extra).

A dataset is named by its id (looked up under ``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``,
as minari does) or by the path of its directory. Nothing is ever downloaded. Dict and tuple
observations are flattened recursively (dict keys sorted, tuple entries in order) into keys such
as ``achieved_goal`` or ``robot/joints``; a plain array observation is the key ``observation``.
Minari stores ``T + 1`` observations per episode (the last one after the final step): it is dropped.
``terminations | truncations`` become ``dones``; an ``info["success"]``/``info["is_success"]``
record, when present, becomes the per-step ``success``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from demos.dataset import DemoDataset
from demos.episode import default_split, make_episode
from dopr_robot.errors import UserError

MINARI_MISSING = "reading Minari datasets needs the minari extra: pip install 'dopr-robot[minari]'"
PLAIN_OBS_KEY = "observation"


def minari_root() -> Path:
    """Where minari keeps local datasets (computed as minari does, without creating it)."""
    configured = os.environ.get("MINARI_DATASETS_PATH")
    return Path(configured) if configured is not None else Path.home() / ".minari" / "datasets"


def minari_data_dir(source: str) -> Path | None:
    """The ``data`` directory (the one holding ``metadata.json``) of a Minari dataset named by a
    directory path or a local id, or None when there is none."""
    candidates = [Path(source)] if Path(source).is_dir() else []
    if not Path(source).is_absolute():
        candidates.append(minari_root() / source)
    for base in candidates:
        for data_dir in (base / "data", base):
            if (data_dir / "metadata.json").is_file():
                return data_dir
    return None


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, np.ndarray]]:
    """``(key, array)`` for every array in a nested dict/tuple observation, dict keys sorted."""
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key], f"{prefix}{key}/")]
    if isinstance(value, (tuple, list)):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, f"{prefix}{i}/")]
    return [(prefix.rstrip("/") or PLAIN_OBS_KEY, np.asarray(value))]


def _per_step_success(infos: dict[str, Any], length: int) -> np.ndarray | None:
    for key in ("is_success", "success"):
        values = infos.get(key)
        if isinstance(values, np.ndarray) and values.ndim == 1 and len(values) in (length, length + 1):
            return values[-length:].astype(bool)  # with length + 1 entries the first is the reset info
    return None


def read_minari(data_dir: Path, label: str, obs_keys: list[str] | None = None) -> DemoDataset:
    """Load the Minari dataset in ``data_dir`` (named ``label`` in messages); see the module docstring."""
    try:
        import minari
        from gymnasium import spaces
    except ImportError:
        raise UserError(MINARI_MISSING) from None
    try:
        dataset = minari.MinariDataset(data_dir)
    except (ValueError, KeyError, OSError) as err:
        raise UserError(f"Minari dataset {label} cannot be read ({err}); re-create or copy it again") from None
    if not isinstance(dataset.action_space, spaces.Box):
        raise UserError(
            f"Minari dataset {label} has {dataset.action_space} actions; behavior cloning here needs "
            "continuous (Box) actions"
        )

    episode_metadata = dataset.storage.get_episode_metadata(dataset.episode_indices)
    seeds = {int(entry["id"]): entry.get("seed") for entry in episode_metadata}
    episodes = []
    for data in dataset.iterate_episodes():
        name = f"episode_{data.id}"
        length = len(data)
        leaves = dict(_leaves(data.observations))
        if obs_keys is None:
            obs_keys = sorted(key for key, array in leaves.items() if array.ndim == 2)
            if not obs_keys:
                shapes = ", ".join(f"{key} {array.shape[1:]}" for key, array in leaves.items())
                raise UserError(
                    f"Minari dataset {label} has no low-dimensional observation keys ({shapes}); pass obs_keys"
                )
        parts = []
        for key in obs_keys:
            if key not in leaves:
                raise UserError(
                    f"Minari dataset {label}: {name} has no observation key {key!r}; "
                    f"available keys: {', '.join(sorted(leaves))}"
                )
            array = leaves[key]
            if array.ndim > 2:
                raise UserError(
                    f"Minari dataset {label}: observation key {key!r} is multi-dimensional per step "
                    f"({array.shape[1:]}); choose low-dimensional obs_keys"
                )
            if len(array) != length + 1:
                raise UserError(
                    f"Minari dataset {label}: {name} has {len(array)} observations of {key!r} for {length} steps "
                    f"(Minari stores steps + 1)"
                )
            parts.append(array[:length].reshape(length, int(np.prod(array.shape[1:]))))
        seed = seeds.get(int(data.id))
        episodes.append(
            make_episode(
                name,
                obs=np.concatenate(parts, axis=1) if parts else np.zeros((length, 0)),
                actions=np.asarray(data.actions).reshape(length, int(np.prod(dataset.action_space.shape))),
                rewards=np.asarray(data.rewards),
                dones=np.logical_or(data.terminations, data.truncations),
                success=_per_step_success(data.infos, length),
                seed=None if seed is None else int(seed),
            )
        )
    if not episodes:
        raise UserError(f"Minari dataset {label} contains no episodes")

    metadata = {key: value for key, value in dataset.storage.metadata.items() if isinstance(value, (str, int, float))}
    metadata["format"] = "Minari dataset"
    env_spec = dataset.env_spec
    train, valid = default_split(len(episodes))
    return DemoDataset(
        episodes,
        train,
        valid,
        source=label,
        obs_keys=list(obs_keys or []),
        task=None if env_spec is None else env_spec.id,
        env_kwargs={} if env_spec is None else dict(env_spec.kwargs),
        metadata=metadata,
    )
