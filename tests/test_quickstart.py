"""The README's main command, run with a tiny budget: table printed, plots and video written."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import pytest

import dopr_robot.commands.quickstart as quickstart
from dopr_robot.cli import main


def test_quickstart_end_to_end_with_a_tiny_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(quickstart, "SETTINGS", dict(
        optimizers=["adamw", "dopr-adamw"], seeds=2, demo_episodes=3, steps=10, batch_size=32,
        eval_episodes=2, num_envs=2, policy_options={"width": 16, "depth": 1}))
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--task", "Reach-v0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| dopr-adamw - adamw | 2 | 2 |" in printed and "rollout.mp4" in printed
    for name in ("summary.md", "results.csv", "val_loss_vs_success.png", "deviation_from_expert.png", "learning_curves.png"):
        assert (out / name).exists(), name
    frames = iio.imread(out / "rollout.mp4")  # (T, H, W, 3)
    assert frames.shape[0] == 101 and frames.shape[2] > 1.8 * frames.shape[1]  # policy | expert, side by side
    assert frames.max() > 50
