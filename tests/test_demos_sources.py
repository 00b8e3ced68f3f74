"""demos.load on sources not made by collect: a robomimic-layout file and Minari datasets."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import gymnasium
import h5py
import numpy as np
import pytest

import demos

needs_minari = pytest.mark.skipif(importlib.util.find_spec("minari") is None,
                                  reason="minari not installed (pip install 'dopr-robot[minari]')")


def test_robomimic_file_with_two_obs_keys_and_an_image(tmp_path: Path) -> None:
    path = tmp_path / "foreign.hdf5"
    rng = np.random.default_rng(0)
    arrays = {}
    with h5py.File(path, "w") as file:
        for i, length in enumerate([4, 6, 5]):
            group = file.create_group(f"data/demo_{i}")
            arrays[i] = {
                "robot0_eef_pos": rng.normal(size=(length, 3)),
                "object": rng.normal(size=(length, 5)),
                "actions": rng.uniform(-1, 1, size=(length, 2)),
            }
            group.create_dataset("obs/robot0_eef_pos", data=arrays[i]["robot0_eef_pos"])
            group.create_dataset("obs/object", data=arrays[i]["object"])
            group.create_dataset("obs/agentview_image", data=np.zeros((length, 8, 8, 3), np.uint8))
            group.create_dataset("actions", data=arrays[i]["actions"])
            group.create_dataset("rewards", data=np.arange(length, dtype=np.float64))
            group.create_dataset("dones", data=np.eye(length, dtype=np.int64)[-1])

    ds = demos.load(path, obs_keys=["robot0_eef_pos", "object"])
    assert ds.task is None and ds.env_kwargs == {} and ds.obs_keys == ["robot0_eef_pos", "object"]
    assert (ds.obs_dim, ds.act_dim) == (8, 2)
    assert (ds.train_indices, ds.valid_indices) == ([0, 1], [2])  # no mask: the default split
    for i, episode in enumerate(ds.episodes):
        expected = np.concatenate([arrays[i]["robot0_eef_pos"], arrays[i]["object"]], axis=1).astype(np.float32)
        np.testing.assert_array_equal(episode.obs, expected)
        np.testing.assert_array_equal(episode.actions, arrays[i]["actions"].astype(np.float32))
        assert episode.success is None and episode.seed is None and episode.dones[-1] and not episode.dones[:-1].any()
    assert ds.episodes[0].is_success is None

    default = demos.load(path)  # 1-D keys, sorted; the image is skipped
    assert default.obs_keys == ["object", "robot0_eef_pos"]
    np.testing.assert_array_equal(default.episodes[1].obs[:, :5], arrays[1]["object"].astype(np.float32))
    assert "unknown (no per-step success recorded)" in default.summary()


def test_robomimic_mask_and_natural_episode_order(tmp_path: Path) -> None:
    path = tmp_path / "masked.hdf5"
    with h5py.File(path, "w") as file:
        for i in (10, 2, 1):
            file.create_dataset(f"data/demo_{i}/obs/state", data=np.full((3, 2), i, np.float32))
            file.create_dataset(f"data/demo_{i}/actions", data=np.zeros((3, 1)))
        file.create_dataset("mask/valid", data=np.array([b"demo_2"]))
    ds = demos.load(path)
    assert [e.name for e in ds.episodes] == ["demo_1", "demo_2", "demo_10"]
    assert (ds.train_indices, ds.valid_indices) == ([0, 2], [1])


def _write_minari_from_buffers(dataset_id: str) -> None:
    """Three episodes with a nested dict observation, written by minari's own writer (no jax needed)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    spaces = gymnasium.spaces
    observation_space = spaces.Dict({
        "goal": spaces.Box(-1, 1, (2,)),
        "robot": spaces.Dict({"vel": spaces.Box(-1, 1, (1,)), "pos": spaces.Box(-1, 1, (3,))}),
    })
    buffers = []
    for i, length in enumerate([5, 4, 6]):
        steps = np.arange(length + 1, dtype=np.float32)[:, None]
        buffers.append(EpisodeBuffer(
            id=i,
            seed=20 + i,
            observations={"goal": np.hstack([steps, steps]) + 10 * i,
                          "robot": {"vel": -steps, "pos": np.hstack([steps] * 3) + 100 * i}},
            actions=np.full((length, 2), i, np.float32),
            rewards=list(np.ones(length)),
            terminations=[False] * (length - 1) + [i == 0],
            truncations=[False] * (length - 1) + [i != 0],
            infos={"success": np.arange(length + 1) == length},
        ))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=observation_space,
                                           action_space=spaces.Box(-1, 1, (2,)), algorithm_name="test",
                                           author="dopr tests", author_email="none", description="test")


@needs_minari
def test_minari_dataset_by_id_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    _write_minari_from_buffers("dopr/toy-v0")
    ds = demos.load("dopr/toy-v0")
    assert ds.obs_keys == ["goal", "robot/pos", "robot/vel"]  # sorted, recursively
    assert (ds.obs_dim, ds.act_dim, len(ds.episodes)) == (6, 2, 3)
    assert [len(e) for e in ds.episodes] == [5, 4, 6]  # the T+1-th observation is dropped
    first = ds.episodes[0]
    np.testing.assert_array_equal(first.obs[:, 0], np.arange(5))
    np.testing.assert_array_equal(first.obs[:, 2:5], np.stack([np.arange(5)] * 3, axis=1))
    np.testing.assert_array_equal(first.obs[:, 5], -np.arange(5))
    assert [e.dones[-1] for e in ds.episodes] == [True, True, True]  # terminated, truncated, truncated
    assert not any(e.dones[:-1].any() for e in ds.episodes)
    assert [e.is_success for e in ds.episodes] == [True, True, True] and not first.success[:-1].any()
    assert [e.seed for e in ds.episodes] == [20, 21, 22]
    assert (ds.train_indices, ds.valid_indices) == ([0, 1], [2])
    assert ds.task is None and ds.metadata["algorithm_name"] == "test"

    by_path = demos.load(tmp_path / "dopr" / "toy-v0", obs_keys="robot/vel,goal")
    assert by_path.obs_keys == ["robot/vel", "goal"] and by_path.obs_dim == 3
    np.testing.assert_array_equal(by_path.episodes[1].obs[0], [0, 10, 10])


@needs_minari
def test_minari_data_collector_on_a_gymnasium_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jax", reason="minari's DataCollector needs jax (pip install 'minari[create]')")
    from minari import DataCollector

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = DataCollector(gymnasium.make("Pendulum-v1", max_episode_steps=10))
    for seed in range(3):
        env.reset(seed=seed)
        while not any(env.step(env.action_space.sample())[2:4]):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset("dopr/pendulum-v0", algorithm_name="random", author="dopr tests", author_email="none",
                           description="test")
    ds = demos.load("dopr/pendulum-v0")
    assert (ds.obs_dim, ds.act_dim, ds.obs_keys) == (3, 1, ["observation"])
    assert [len(e) for e in ds.episodes] == [10, 10, 10] and all(e.dones[-1] for e in ds.episodes)
    assert ds.task == "Pendulum-v1"
