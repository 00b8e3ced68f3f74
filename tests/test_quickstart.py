"""The README's main command, run with a tiny budget: table printed, plots and video written."""

from __future__ import annotations

import re
from pathlib import Path

import imageio.v3 as iio
import pytest

import dopr_robot.commands.quickstart as quickstart
from dopr_robot.cli import main


def test_quickstart_end_to_end_with_a_tiny_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(quickstart, "SETTINGS", {
        "optimizers": ["adamw", "dopr-adamw"], "seeds": 2, "demo": {"episodes": 3},
        "train": {"steps": 10, "batch_size": 32, "policy_options": {"width": 16, "depth": 1}},
        "eval": {"episodes": 2, "num_envs": 2}})
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--task", "Reach-v0", "--no-progress", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    # the paired row of the fitted table (the full markdown is in summary.md), every line within 120 columns
    assert re.search(r"^dopr-adamw - adamw +2 +2 ", printed, re.M) and "rollout.mp4" in printed
    assert printed.rstrip().split("\n\n")[-1].startswith("In words: dopr-adamw - adamw success rate")  # the answer last
    assert max(map(len, printed.replace(str(tmp_path), "/tmp/t").splitlines())) <= 120  # paths as long as a user's
    for name in ("summary.md", "results.csv", "val_loss_vs_success.png", "deviation_from_expert.png", "learning_curves.png"):
        assert (out / name).exists(), name
    # Again on the same directory with other settings: refused before any work, naming --overwrite, an
    # option quickstart takes (it named a compare option before).
    monkeypatch.setattr(quickstart, "SETTINGS", {**quickstart.SETTINGS, "eval": {"episodes": 3, "num_envs": 2}})
    assert main(["quickstart", "--out", str(out), "--task", "Reach-v0", "--no-progress"]) == 2
    assert "eval.episodes (2 -> 3)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_exit:
        main(["quickstart", "--help"])
    assert help_exit.value.code == 0 and "--overwrite" in capsys.readouterr().out
    frames = iio.imread(out / "rollout.mp4")  # (T, H, W, 3)
    assert frames.shape[0] == 101 and frames.shape[2] > 1.8 * frames.shape[1]  # policy | expert, side by side
    assert frames.max() > 50


def test_quickstart_settings_are_a_valid_comparison(tmp_path: Path) -> None:
    from dopr_robot.compare import CompareConfig
    from dopr_robot.config import config_from_dict

    config = config_from_dict(CompareConfig, {**quickstart.SETTINGS, "out": str(tmp_path), "tasks": [quickstart.DEFAULT_TASK]})
    assert (config.tasks, config.optimizers, config.seeds, config.demo.episodes) == (["Push-v0"], ["adamw", "dopr-adamw"], 3, 50)
    assert (config.train.steps, config.train.batch_size, config.eval.episodes, config.eval.num_envs) == (1500, 256, 100, 10)
    # The cadences it had when compare derived them by hand.
    assert (config.train.val_every, config.train.checkpoint_every, config.train.log_every) == (150, 375, 37)
