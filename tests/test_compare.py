"""The comparison harness: a tiny grid end to end, agreement of its outputs, resuming after a kill."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

import dopr_robot.compare as compare_module
from dopr_robot.compare import CompareConfig, compare
from dopr_robot.errors import UserError
from dopr_robot.report import t_interval

TINY = dict(tasks=["Reach-v0"], optimizers=["adamw", "dopr-adamw"], seeds=2, demo_episodes=4, steps=20,
            batch_size=32, eval_episodes=3, num_envs=3, policy_options={"width": 16, "depth": 1})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_grid_writes_agreeing_csv_summary_and_plots(tmp_path: Path) -> None:
    rows = compare(CompareConfig(out=str(tmp_path), **TINY), progress=False)
    assert [(r["optimizer"], r["seed"]) for r in rows] == [("adamw", 0), ("adamw", 1), ("dopr-adamw", 0), ("dopr-adamw", 1)]
    table = read_csv(tmp_path / "results.csv")
    assert len(table) == 4 and {"val_loss", "success_rate", "mean_return", "j_traj", "ttf_ratio", "wall_time_s"} <= set(table[0])
    for row, line in zip(rows, table):
        eval_json = json.loads((tmp_path / "runs" / "Reach-v0" / row["optimizer"] / f"seed{row['seed']}" / "eval.json").read_text())
        assert float(line["success_rate"]) == eval_json["closed_loop"]["success_rate"]
        assert float(line["val_loss"]) == eval_json["validation"]["val_loss"]
        assert int(line["eval_episodes"]) == 3

    summary = (tmp_path / "summary.md").read_text()
    for optimizer in ("adamw", "dopr-adamw"):
        returns = [float(line["mean_return"]) for line in table if line["optimizer"] == optimizer]
        mean, low, high = t_interval(returns)
        assert f"| {optimizer} | 2 | " in summary and f"{mean:.3g} [{low:.3g}, {high:.3g}]" in summary
    assert "| dopr-adamw - adamw | 2 | 3 |" in summary
    for plot in ("val_loss_vs_success.png", "deviation_from_expert.png", "learning_curves.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Killed(Exception):
    pass


def test_killed_compare_resumes_and_skips_finished_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = CompareConfig(out=str(tmp_path), **TINY)
    real_evaluate = compare_module.evaluate_checkpoint
    calls = []

    def evaluate_then_die(run_dir, **kwargs):
        calls.append(Path(run_dir))
        if len(calls) == 3:
            raise Killed  # dies after training cell 3, before its evaluation is written
        return real_evaluate(run_dir, **kwargs)

    monkeypatch.setattr(compare_module, "evaluate_checkpoint", evaluate_then_die)
    with pytest.raises(Killed):
        compare(config, progress=False)
    finished = sorted(tmp_path.glob("runs/*/*/seed*/eval.json"))
    assert len(finished) == 2
    first_written = {p: p.stat().st_mtime_ns for p in finished}

    monkeypatch.setattr(compare_module, "evaluate_checkpoint", real_evaluate)
    trained = []
    import dopr_robot.train as train_module  # compare() imports train() at call time: patch it there

    original_train = train_module.train

    def counting_train(train_config, **kwargs):
        trained.append((train_config.optimizer, train_config.seed, kwargs["resume"]))
        return original_train(train_config, **kwargs)

    monkeypatch.setattr(train_module, "train", counting_train)
    rows = compare(config, progress=False)
    assert len(rows) == 4
    assert {p: p.stat().st_mtime_ns for p in finished} == first_written  # finished cells untouched
    # Cell 3 had its final checkpoint: it resumes (no steps left) and is evaluated; cell 4 trains anew.
    assert trained == [("dopr-adamw", 0, True), ("dopr-adamw", 1, False)]


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    config = CompareConfig(out=str(tmp_path), **{**TINY, "optimizers": ["adamw"], "seeds": 1})
    compare(config, progress=False)
    with pytest.raises(UserError, match=r"holds a comparison made with other settings \(changed: lr\)"):
        compare(replace(config, lr=0.5), progress=False)
    rows = compare(replace(config, seeds=2), progress=False)  # growing the grid is fine
    assert len(rows) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(optimizers=["adamw", "lion"]), r"unknown optimizer\(s\) lion"),
        (dict(tasks=["Nope-v0"]), r"unknown task\(s\) Nope-v0; valid: Reach-v0"),
        (dict(seeds=0), r"--seeds must be >= 1"),
        (dict(data={"Push-v0": "x.hdf5"}), r"--data names task\(s\) Push-v0 that are not in --tasks"),
    ],
)
def test_config_errors(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        CompareConfig(out=str(tmp_path), **{**TINY, **overrides})
