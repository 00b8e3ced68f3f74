"""DemoDataset: training windows at episode edges, normalization over train episodes, the split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from demos.dataset import STD_FLOOR, DemoDataset
from demos.episode import default_split, make_episode
from dopr_robot.errors import UserError


def _dataset(lengths: list[int], valid: list[int] | None = None) -> DemoDataset:
    """Episode e, step t: obs = [100 e + t, 7], action = [-(100 e + t)] (the 7 is a constant dimension)."""
    episodes = []
    for e, length in enumerate(lengths):
        values = 100.0 * e + np.arange(length)
        obs = np.stack([values, np.full(length, 7.0)], axis=1)
        episodes.append(make_episode(f"demo_{e}", obs, -values[:, None], seed=e))
    valid = [len(lengths) - 1] if valid is None else valid
    train = [i for i in range(len(lengths)) if i not in valid]
    return DemoDataset(episodes, train, valid, source="synthetic", obs_keys=["x"])


def test_windows_pad_at_episode_edges() -> None:
    ds = _dataset([5, 3, 4])  # train: episodes 0 and 1, valid: episode 2
    windows = ds.windows("train", history=3, chunk=4)
    assert len(windows) == 5 + 3
    first = windows[0]
    assert first["obs"].shape == (3, 2) and first["obs"].dtype == torch.float32
    assert first["obs"][:, 0].tolist() == [0, 0, 0] and first["obs_mask"].tolist() == [False, False, True]
    assert first["actions"].shape == (4, 1) and first["actions"][:, 0].tolist() == [0, -1, -2, -3]
    assert first["action_mask"].tolist() == [True] * 4
    second = windows[1]
    assert second["obs"][:, 0].tolist() == [0, 0, 1] and second["obs_mask"].tolist() == [False, True, True]
    last = windows[4]  # step 4, the last of episode 0
    assert last["obs"][:, 0].tolist() == [2, 3, 4] and last["obs_mask"].tolist() == [True] * 3
    assert last["actions"][:, 0].tolist() == [-4] * 4 and last["action_mask"].tolist() == [True, False, False, False]
    # Episode 1 starts fresh: no observation or action of episode 0 leaks into its windows.
    start = windows[5]
    assert start["obs"][:, 0].tolist() == [100, 100, 100] and start["obs_mask"].tolist() == [False, False, True]
    end = windows[7]
    assert end["actions"][:, 0].tolist() == [-102] * 4 and end["action_mask"].tolist() == [True, False, False, False]
    assert windows.episode_index.tolist() == [0] * 5 + [1] * 3 and windows.step.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]

    valid = ds.windows("valid", history=2, chunk=2)
    assert len(valid) == 4 and valid[0]["obs"][:, 0].tolist() == [200, 200]


def test_a_history_longer_than_the_episode_is_padded_with_its_first_observation() -> None:
    windows = _dataset([3, 2]).windows("train", history=4, chunk=1)  # episode 0: observations 0, 1, 2
    assert [windows[t]["obs"][:, 0].tolist() for t in range(3)] == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2]]
    assert [windows[t]["obs_mask"].tolist() for t in range(3)] == [[False, False, False, True], [False, False, True, True],
                                                                  [False, True, True, True]]


def test_default_window_is_one_step() -> None:
    windows = _dataset([3, 2]).windows()
    assert len(windows) == 3
    item = windows[2]
    assert item["obs"].shape == (1, 2) and item["actions"].shape == (1, 1)
    assert item["obs_mask"].tolist() == [True] and item["action_mask"].tolist() == [True]


def test_dataloader_batches_match_items() -> None:
    windows = _dataset([6, 4, 2]).windows("train", history=2, chunk=3)
    loader = torch.utils.data.DataLoader(windows, batch_size=4, shuffle=False)
    batch = next(iter(loader))
    assert batch["obs"].shape == (4, 2, 2) and batch["actions"].shape == (4, 3, 1)
    assert batch["obs_mask"].dtype == torch.bool and batch["action_mask"].shape == (4, 3)
    for i in range(4):
        for key in batch:
            torch.testing.assert_close(batch[key][i], windows[i][key])
    direct = windows.batch(torch.tensor([9, 0]))
    torch.testing.assert_close(direct["actions"][0], windows[9]["actions"])
    # Whole batches from the sampler: indexing with a list gives the stacked batch.
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(windows), 4, drop_last=False)
    sampled = next(iter(torch.utils.data.DataLoader(windows, batch_size=None, sampler=sampler)))
    for key in batch:
        torch.testing.assert_close(sampled[key], batch[key])


def test_normalization_uses_train_episodes_only() -> None:
    ds = _dataset([4, 4, 2], valid=[2])
    stats = ds.normalization()
    train_obs = np.concatenate([ds.episodes[0].obs, ds.episodes[1].obs])
    np.testing.assert_allclose(stats["obs_mean"], train_obs.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["obs_std"][0], train_obs[:, 0].std(), rtol=1e-6)
    assert stats["obs_std"][1] == 1.0 and train_obs[:, 1].std() < STD_FLOOR  # constant dimension
    np.testing.assert_allclose(stats["act_mean"], [-train_obs[:, 0].mean()], rtol=1e-6)
    assert all(value.dtype == np.float32 for value in stats.values())
    assert set(stats) == {"obs_mean", "obs_std", "act_mean", "act_std"}


def test_default_split_is_by_whole_episodes() -> None:
    assert default_split(1) == ([0], [])
    assert default_split(2) == ([0], [1])
    assert default_split(20) == (list(range(18)), [18, 19])
    ds = _dataset([3] * 20, valid=default_split(20)[1])
    train, valid = ds.windows("train"), ds.windows("valid")
    assert set(train.episode_index) == set(range(18)) and set(valid.episode_index) == {18, 19}
    assert len(train) + len(valid) == 60


def test_window_arguments_and_empty_split() -> None:
    ds = _dataset([3], valid=[])
    with pytest.raises(UserError, match="history must be an integer >= 1, got 0"):
        ds.windows(history=0)
    with pytest.raises(UserError, match="chunk must be an integer >= 1, got -2"):
        ds.windows(chunk=-2)
    with pytest.raises(UserError, match="the valid split of synthetic has no episodes"):
        ds.windows("valid")
    with pytest.raises(UserError, match="unknown split 'test'; valid splits: train, valid"):
        ds.windows("test")
    with pytest.raises(UserError, match="the train split has no episodes"):
        _dataset([3], valid=[0]).normalization()
    with pytest.raises(UserError, match="in both the train and the valid split"):
        DemoDataset(ds.episodes, [0], [0], source="synthetic", obs_keys=["x"])
