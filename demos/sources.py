"""``load(source)``: one entry point for every kind of demonstration source, detected from ``source``.

- an existing directory: a LeRobot dataset (format v3.0, ``meta/info.json``) or a Minari dataset directory;
- an existing file: HDF5 in the robomimic layout (from ``dopr-robot collect`` or elsewhere);
- anything else: the id of a Minari dataset stored locally (never downloaded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from demos.dataset import DemoDataset
from demos.hdf5 import read_hdf5
from demos.lerobot_source import is_lerobot_dir, read_lerobot
from demos.minari_source import minari_data_dir, minari_root, read_minari
from dopr_robot.errors import UserError

HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf", ".he5")


def _parse_obs_keys(obs_keys: str | Sequence[str] | None) -> list[str] | None:
    if obs_keys is None:
        return None
    keys = [key.strip() for key in obs_keys.split(",")] if isinstance(obs_keys, str) else [str(k) for k in obs_keys]
    if not keys or not all(keys):
        raise UserError(f"obs_keys must name at least one key and no empty ones, got {obs_keys!r}")
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise UserError(f"obs_keys names {', '.join(duplicates)} more than once; give each key once")
    return keys


def load(source: str | os.PathLike, obs_keys: str | Sequence[str] | None = None) -> DemoDataset:
    """Load demonstrations from an HDF5 file, a LeRobot v3.0 or Minari dataset directory, or a local Minari id.

    ``obs_keys`` (a list, or one comma-separated string) picks the observation keys: low-dimensional
    ones are concatenated in that order, camera images (``<camera>_image``, uint8 ``(T, H, W, 3)``,
    HDF5 files) are kept as images; by default ``flat`` in our files, else every key whose per-step
    data is 1-D, sorted. Every problem a user can
    fix (missing or damaged file, missing keys, empty episodes, NaN/Inf, mismatched sizes, a Minari
    dataset that is not stored locally) raises :class:`~dopr_robot.errors.UserError`.
    """
    text = os.fspath(source)
    keys = _parse_obs_keys(obs_keys)
    path = Path(text)
    if path.is_dir():
        if is_lerobot_dir(path):
            return read_lerobot(path, keys)
        data_dir = minari_data_dir(text)
        if data_dir is None:
            raise UserError(
                f"{text} is a directory but neither a LeRobot dataset (no meta/info.json in it) nor a Minari dataset "
                "(no data/metadata.json); pass an HDF5 file, a LeRobot or Minari dataset directory or a local "
                "Minari dataset id"
            )
        return read_minari(data_dir, text, keys)
    if path.is_file():
        if not h5py.is_hdf5(text):
            raise UserError(
                f"{text} is not an HDF5 file; expected a file from `dopr-robot collect`, a robomimic-layout "
                "HDF5 file, or a Minari dataset (directory or id)"
            )
        return read_hdf5(text, keys)
    if path.suffix.lower() in HDF5_SUFFIXES:
        raise UserError(f"{text} does not exist; check the path, or create it with `dopr-robot collect --out {text}`")
    data_dir = minari_data_dir(text)
    if data_dir is None:
        raise UserError(
            f"{text} is neither a file nor a directory, and no Minari dataset with that id is stored locally "
            f"(looked in {minari_root() / text}; set MINARI_DATASETS_PATH to change where). Downloads are not "
            "possible here: copy the dataset there, or pass an HDF5 file or a dataset directory"
        )
    return read_minari(data_dir, text, keys)
