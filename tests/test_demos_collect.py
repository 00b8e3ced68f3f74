"""demos.collect: round trip through the file, seeding, noise injection, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import demos
import envs
from demos import DemoDataset
from dopr_robot.errors import UserError


def _collect(path: Path, episodes: int = 2, seed: int = 0, noise: float = 0.0, task: str = "Reach-v0") -> DemoDataset:
    demos.collect(task, episodes, path, seed=seed, noise=noise, progress=False, version="9.9.9")
    return demos.load(path)


def test_round_trip_schema_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "reach.hdf5"
    result = demos.collect("Reach-v0", 3, path, seed=5, progress=False, version="9.9.9")
    assert (result.episodes, result.transitions) == (3, 300)
    plain = tmp_path / "plain"
    plain.touch()
    assert path.stat().st_mode == plain.stat().st_mode  # usual permissions, not a temp file's 0600
    ds = demos.load(path)
    assert (ds.obs_dim, ds.act_dim, ds.obs_keys, ds.task, ds.env_kwargs) == (18, 3, ["flat"], "Reach-v0", {})
    assert [e.name for e in ds.episodes] == ["demo_0", "demo_1", "demo_2"]
    assert [e.seed for e in ds.episodes] == [5, 6, 7]
    assert (ds.train_indices, ds.valid_indices) == ([0, 1], [2])
    assert ds.metadata["expert_kind"] == "scripted" and ds.metadata["version"] == "9.9.9"
    assert (ds.metadata["seed"], ds.metadata["noise"]) == (5, 0.0)
    for episode in ds.episodes:
        assert episode.obs.shape == (100, 18) and episode.obs.dtype == np.float32
        assert episode.actions.shape == (100, 3) and episode.actions.dtype == np.float32
        assert episode.rewards.shape == (100,) and episode.rewards.dtype == np.float32
        assert episode.dones.dtype == bool and episode.dones.tolist() == [False] * 99 + [True]
        assert episode.success is not None and episode.success.shape == (100,)
    # Episode i replays from reset(seed=5 + i) with the expert.
    env, expert = envs.make("Reach-v0"), envs.make_expert("Reach-v0")
    obs, _ = env.reset(seed=6)
    np.testing.assert_array_equal(ds.episodes[1].obs[0], obs)
    np.testing.assert_array_equal(ds.episodes[1].actions[0], expert.act(obs))
    # robomimic layout as written.
    with h5py.File(path, "r") as file:
        assert file["data"].attrs["total"] == 300
        assert json.loads(file["data"].attrs["env_args"]) == {"env_name": "Reach-v0", "env_kwargs": {}, "type": "dopr"}
        demo = file["data/demo_2"]
        assert demo.attrs["num_samples"] == 100 and demo.attrs["seed"] == 7
        assert bool(demo.attrs["success"]) == bool(demo["success"][-1])
        assert demo["next_obs/flat"].shape == (100, 18)
        np.testing.assert_array_equal(demo["next_obs/flat"][:-1], demo["obs/flat"][1:])
        assert file["mask/train"][()].tolist() == [b"demo_0", b"demo_1"]
        assert file["mask/valid"][()].tolist() == [b"demo_2"]


def test_same_seed_same_file_different_seed_different_data(tmp_path: Path) -> None:
    first = _collect(tmp_path / "a.hdf5", seed=1, noise=0.2)
    second = _collect(tmp_path / "b.hdf5", seed=1, noise=0.2)
    other = _collect(tmp_path / "c.hdf5", seed=2, noise=0.2)
    assert (tmp_path / "a.hdf5").read_bytes() == (tmp_path / "b.hdf5").read_bytes()
    for a, b, c in zip(first.episodes, second.episodes, other.episodes, strict=True):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.actions, b.actions)
        assert not np.array_equal(a.obs, c.obs)


def test_noise_injection_labels_are_clean_expert_actions(tmp_path: Path) -> None:
    noisy = _collect(tmp_path / "noisy.hdf5", episodes=1, seed=3, noise=0.3)
    clean = _collect(tmp_path / "clean.hdf5", episodes=1, seed=3, noise=0.0)
    expert = envs.make_expert("Reach-v0")
    episode = noisy.episodes[0]
    for t in range(len(episode)):
        np.testing.assert_array_equal(expert.act(episode.obs[t]), episode.actions[t])
    # Same start, different path: the executed actions were not the labels.
    np.testing.assert_array_equal(episode.obs[0], clean.episodes[0].obs[0])
    assert not np.allclose(episode.obs[1:], clean.episodes[0].obs[1:])
    env = envs.make("Reach-v0")
    env.reset(seed=3)
    after_label, *_ = env.step(episode.actions[0])
    assert not np.allclose(after_label, episode.obs[1])
    assert noisy.metadata["noise"] == 0.3


def test_a_shorter_collection_is_a_prefix(tmp_path: Path) -> None:
    short = _collect(tmp_path / "short.hdf5", episodes=1, seed=4, noise=0.1, task="Push-v0")
    long = _collect(tmp_path / "long.hdf5", episodes=2, seed=4, noise=0.1, task="Push-v0")
    np.testing.assert_array_equal(short.episodes[0].obs, long.episodes[0].obs)
    assert long.obs_dim == 15 and long.act_dim == 2 and len(long.episodes[0]) == 150


class _FailingExpert:
    def __init__(self, expert: envs.Expert, fail_after: int) -> None:
        self.expert, self.calls, self.fail_after = expert, 0, fail_after

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("expert crashed")
        return self.expert.act(obs)


def test_failed_collection_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_expert = envs.make_expert
    monkeypatch.setattr(envs, "make_expert", lambda name: _FailingExpert(make_expert(name), fail_after=150))
    with pytest.raises(RuntimeError, match="expert crashed"):
        demos.collect("Reach-v0", 3, tmp_path / "demos.hdf5", progress=False)
    assert list(tmp_path.iterdir()) == []
    # With --overwrite, a failed run keeps the old file intact.
    old = tmp_path / "old.hdf5"
    old.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="expert crashed"):
        demos.collect("Reach-v0", 3, old, overwrite=True, progress=False)
    assert old.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [old]


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "demos.hdf5"
    path.write_bytes(b"keep me")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        demos.collect("Reach-v0", 1, path, progress=False)
    assert path.read_bytes() == b"keep me"
    demos.collect("Reach-v0", 1, path, overwrite=True, progress=False)
    assert len(demos.load(path).episodes) == 1


def test_success_only_keeps_successes_and_records_the_dropped(tmp_path: Path) -> None:
    # Reach-v0's scripted expert under large action noise fails some episodes (seed 0..7: 2 of 8 succeed).
    plain = _collect(tmp_path / "plain.hdf5", episodes=8, noise=0.5)
    outcomes = {e.seed: bool(e.is_success) for e in plain.episodes}
    assert 2 <= sum(outcomes.values()) < 8
    kept_seeds = [seed for seed, ok in outcomes.items() if ok][:2]
    dropped_seeds = [seed for seed, ok in outcomes.items() if not ok and seed < kept_seeds[-1]]
    assert dropped_seeds  # the test exercises dropping

    result = demos.collect("Reach-v0", 2, tmp_path / "ok.hdf5", noise=0.5, success_only=True, progress=False)
    assert (result.episodes, result.successes, result.attempts) == (2, 2, kept_seeds[-1] + 1)
    assert list(result.dropped_seeds) == dropped_seeds
    assert f"dropped {len(dropped_seeds)} failed of {kept_seeds[-1] + 1} attempts" in str(result)
    ds = demos.load(tmp_path / "ok.hdf5")
    assert [e.name for e in ds.episodes] == ["demo_0", "demo_1"] and [e.seed for e in ds.episodes] == kept_seeds
    assert all(e.is_success for e in ds.episodes)
    by_seed = {e.seed: e for e in plain.episodes}
    for episode in ds.episodes:  # the same episode a plain collection gives for that seed (noise included)
        np.testing.assert_array_equal(episode.obs, by_seed[episode.seed].obs)
    meta = ds.metadata
    assert (meta["success_only"], meta["episodes"], meta["attempts"]) == (True, 2, kept_seeds[-1] + 1)
    assert (meta["dropped"], meta["dropped_seeds"]) == (len(dropped_seeds), dropped_seeds)
    assert f"dropped {len(dropped_seeds)} failed episodes (success-only)" in ds.summary()
    assert plain.metadata["success_only"] is False and "dropped" not in plain.summary()


def test_success_only_gives_up_after_max_attempts(tmp_path: Path) -> None:
    out = tmp_path / "demos.hdf5"
    with pytest.raises(UserError, match=r"succeeded in 2 of 8 attempts \(seeds 0..7\), short of --episodes 3; raise --max-attempts"):
        demos.collect("Reach-v0", 3, out, noise=0.5, success_only=True, max_attempts=8, progress=False)
    with pytest.raises(UserError, match=r"succeeded in 0 of 13 attempts \(seeds 0..12\)"):  # default cap 3 * 1 + 10
        demos.collect("Reach-v0", 1, out, noise=2.0, success_only=True, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [  # ranges are CollectConfig's to refuse with the option's name: here they name the parameter
        ({"max_attempts": 5}, ValueError, "^max_attempts applies only with success_only=True"),
        ({"max_attempts": 1, "episodes": 2, "success_only": True}, ValueError,
         r"^max_attempts must be an integer >= episodes \(2\), got 1"),
        ({"episodes": 0}, ValueError, "^episodes must be an integer >= 1"),
        ({"seed": -1}, ValueError, "^seed must be an integer >= 0"),
        ({"noise": -0.1}, ValueError, "^noise must be a finite number >= 0"),
        ({"noise": float("nan")}, ValueError, "^noise must be a finite number >= 0"),
        ({"task": "Fly-v0"}, UserError, "unknown task 'Fly-v0'; valid tasks: Reach-v0"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, error: type[Exception], message: str) -> None:
    arguments = {"task": "Reach-v0", "episodes": 1, "out": tmp_path / "x.hdf5", "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        demos.collect(**arguments)
    assert list(tmp_path.iterdir()) == []
