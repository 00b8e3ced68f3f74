"""Every bad input to demos.load is one UserError that names the problem and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import demos
from dopr_robot.errors import UserError


def _write(path: Path, demos_data: dict[str, dict[str, np.ndarray]]) -> Path:
    """A robomimic-layout file: ``{demo: {"obs/<key>": array, "actions": array, ...}}``."""
    with h5py.File(path, "w") as file:
        file.create_group("data")
        for name, arrays in demos_data.items():
            group = file.create_group(f"data/{name}")
            for key, array in arrays.items():
                group.create_dataset(key, data=array)
    return path


def _good(length: int = 4, obs_dim: int = 3, act_dim: int = 2) -> dict[str, np.ndarray]:
    return {"obs/state": np.zeros((length, obs_dim), np.float32), "actions": np.zeros((length, act_dim), np.float32)}


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("collected") / "reach.hdf5"
    demos.collect("Reach-v0", 2, path, progress=False)
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.hdf5 does not exist; check the path"):
        demos.load(tmp_path / "missing.hdf5")


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "notes.hdf5"
    path.write_text("just text\n")
    with pytest.raises(UserError, match="is not an HDF5 file"):
        demos.load(path)


def test_truncated_file(tmp_path: Path, collected: Path) -> None:
    path = tmp_path / "cut.hdf5"
    data = collected.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot be opened as HDF5.*truncated or corrupt"):
        demos.load(path)


def test_no_data_group(tmp_path: Path) -> None:
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as file:
        file.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(UserError, match="has no 'data' group.*robomimic layout.*top-level keys: weights"):
        demos.load(path)


def test_demo_without_actions(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.hdf5", {"demo_0": _good(), "demo_1": {"obs/state": np.zeros((4, 3))}})
    with pytest.raises(UserError, match="episode demo_1 has no 'actions'; it has: obs"):
        demos.load(path)


def test_unknown_obs_key_lists_available_keys(tmp_path: Path) -> None:
    arrays = {**_good(), "obs/gripper": np.zeros((4, 1))}
    path = _write(tmp_path / "f.hdf5", {"demo_0": arrays})
    with pytest.raises(UserError, match="demo_0 has no observation key 'joints'; available keys: gripper, state"):
        demos.load(path, obs_keys=["state", "joints"])


def test_image_obs_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.hdf5", {"demo_0": {**_good(), "obs/image": np.zeros((4, 8, 8, 3), np.uint8)}})
    with pytest.raises(UserError, match="'image' holds images.*choose low-dimensional obs_keys"):
        demos.load(path, obs_keys="image")


def test_empty_episode(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.hdf5", {"demo_0": _good(), "demo_1": _good(length=0)})
    with pytest.raises(UserError, match=r"episode demo_1 has no steps \(length 0\)"):
        demos.load(path)


@pytest.mark.parametrize(("key", "bad"), [("obs/state", np.nan), ("actions", np.inf)])
def test_nan_or_inf_names_episode_and_key(tmp_path: Path, key: str, bad: float) -> None:
    arrays = _good()
    arrays[key][2, 1] = bad
    path = _write(tmp_path / "f.hdf5", {"demo_0": _good(), "demo_1": arrays})
    name = "obs" if key.startswith("obs") else "actions"
    with pytest.raises(UserError, match=f"episode demo_1: {name} contains NaN or Inf \\(first at step 2\\)"):
        demos.load(path)


@pytest.mark.parametrize(
    ("kwargs", "label"), [({"obs_dim": 5}, "observation size 5"), ({"act_dim": 1}, "action size 1")]
)
def test_sizes_differ_between_episodes(tmp_path: Path, kwargs: dict, label: str) -> None:
    path = _write(tmp_path / "f.hdf5", {"demo_0": _good(), "demo_1": _good(**kwargs)})
    with pytest.raises(UserError, match=f"episode demo_1 has {label} but episode demo_0 has"):
        demos.load(path)


def test_lengths_differ_within_an_episode(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.hdf5", {"demo_0": {"obs/state": np.zeros((5, 3)), "actions": np.zeros((4, 2))}})
    with pytest.raises(UserError, match="episode demo_0: obs has 5 steps but actions has 4"):
        demos.load(path)


def test_mask_naming_missing_episode(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.hdf5", {"demo_0": _good(), "demo_1": _good()})
    with h5py.File(path, "a") as file:
        file.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_7"]))
    with pytest.raises(UserError, match="mask/train names episodes not in data/: demo_7"):
        demos.load(path)


def test_bad_obs_keys_argument(collected: Path) -> None:
    with pytest.raises(UserError, match="obs_keys names flat more than once"):
        demos.load(collected, obs_keys=["flat", "flat"])


def test_minari_id_not_stored_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(UserError, match=f"no Minari dataset with that id is stored locally \\(looked in {tmp_path}.*"
                                        "Downloads are not possible here"):
        demos.load("D4RL/door/human-v2")


def test_directory_that_is_not_a_minari_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory but neither a LeRobot dataset .* nor a Minari dataset"):
        demos.load(tmp_path)


def test_minari_extra_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari now raises ImportError
    with pytest.raises(UserError, match=r"needs the minari extra: pip install 'dopr-robot\[minari\]'"):
        demos.load(tmp_path)
