"""`compare --data` takes a robomimic-layout file (named observation keys, no ``flat``) loaded with
the grid's ``--obs-keys``, and still refuses a file whose actions have another size than the task's."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from dopr_robot.cli import main
from dopr_robot.compare import check_data_file

# Reach-v0: 18-dim flat observations, 3-dim actions. The file's keys concatenate to 20 dimensions
# with every key, to 15 with the two the grid picks: neither is the flat size, as in robomimic's files.
KEYS = {"robot_state": 12, "goal": 3, "extra": 5}
PICKED = "robot_state,goal"


def write_named_keys_file(path: Path, act_dim: int = 3, episodes: int = 3, steps: int = 12) -> Path:
    """robomimic's layout: data/demo_i/{obs/<key>, actions, rewards, dones}, env_args naming Reach-v0."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        for i in range(episodes):
            group = data.create_group(f"demo_{i}")
            for key, dim in KEYS.items():
                group.create_dataset(f"obs/{key}", data=rng.normal(size=(steps, dim)))
            group.create_dataset("actions", data=rng.uniform(-1, 1, size=(steps, act_dim)))
            group.create_dataset("rewards", data=np.zeros(steps))
            group.create_dataset("dones", data=np.eye(steps)[-1])
            group.attrs["num_samples"] = steps
        data.attrs["total"] = episodes * steps
        data.attrs["env_args"] = json.dumps({"env_name": "Reach-v0", "env_kwargs": {}, "type": 1})
    return path


def test_named_keys_are_loaded_with_the_grid_s_obs_keys(tmp_path: Path) -> None:
    check_data_file("Reach-v0", str(write_named_keys_file(tmp_path / "named.hdf5")), PICKED.split(","))


def test_compare_accepts_the_file_and_still_refuses_another_action_size(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_named_keys_file(tmp_path / "named.hdf5")
    bad = write_named_keys_file(tmp_path / "wide.hdf5", act_dim=4)
    command = ["compare", "--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "1", "--steps", "2",
               "--batch-size", "8", "--policy-options", '{"width": 8, "depth": 1}', "--obs-keys", PICKED,
               "--eval-episodes", "1", "--eval-num-envs", "1", "--threads", "1", "--device", "cpu", "--no-progress"]
    # The good file passes every check made before work (what follows, training on it and evaluating
    # Reach-v0 with its keys, is other layers'): stop at the first cell.
    def stop(*args, **kwargs):
        raise RuntimeError("checks passed")

    monkeypatch.setattr("dopr_robot.compare.run_cells", stop)
    with pytest.raises(RuntimeError, match="checks passed"):
        main([*command, "--out", str(tmp_path / "good"), "--data", json.dumps({"Reach-v0": str(good)})])
    # The refusal comes before any work: nothing is written.
    assert main([*command, "--out", str(tmp_path / "bad"), "--data", json.dumps({"Reach-v0": str(bad)})]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its actions have 4 dimensions, Reach-v0's 3" in err, err
    assert not (tmp_path / "bad").exists()


def test_sweep_accepts_the_file_with_its_obs_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_named_keys_file(tmp_path / "named.hdf5")

    def stop(*args, **kwargs):
        raise RuntimeError("checks passed")

    monkeypatch.setattr("dopr_robot.sweep._run_stage", stop)
    with pytest.raises(RuntimeError, match="checks passed"):
        main(["sweep", "--out", str(tmp_path / "sweep"), "--tasks", "Reach-v0", "--bases", "adamw", "--lrs", "0.001",
              "--dampings", "0.01", "--seeds", "1", "--steps", "2", "--obs-keys", PICKED, "--threads", "1",
              "--device", "cpu", "--no-progress", "--data", json.dumps({"Reach-v0": str(good)})])
