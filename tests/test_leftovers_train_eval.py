"""`train --eval-every` evaluates with compare's --eval-* settings: a chunked policy executes
--eval-actions-per-chunk actions of each plan, and settings it cannot use are refused before training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dopr_robot.cli import main
from dopr_robot.evaluate.rollout import PolicyController

TINY = ["--steps", "4", "--batch-size", "16", "--policy-options", json.dumps({"width": 8, "depth": 1}),
        "--no-progress", "--threads", "1", "--device", "cpu"]


def test_periodic_evaluation_executes_the_chunk_it_is_told(reach_demos: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"act": 0, "predict": 0}
    act, predict = PolicyController.act, PolicyController._predict

    def counted(name, method):
        def wrapper(self, *args, **kwargs):
            calls[name] += 1
            return method(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(PolicyController, "act", counted("act", act))
    monkeypatch.setattr(PolicyController, "_predict", counted("predict", predict))
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(reach_demos), "--out", str(run_dir), *TINY, "--chunk", "4",
                 "--eval-every", "4", "--eval-episodes", "1", "--eval-num-envs", "1",
                 "--eval-actions-per-chunk", "4"]) == 0
    evaluations = [line for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                   if "eval_success_rate" in line]
    assert [line["step"] for line in evaluations] == [4] and evaluations[0]["eval_episodes"] == 1
    # One episode in one env: a plan every 4 steps (every step would be 4 times as many).
    assert calls["act"] >= 8 and calls["predict"] == math.ceil(calls["act"] / 4), calls


def test_settings_it_cannot_use_are_refused_before_training(reach_demos: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    base = ["train", "--data", str(reach_demos), "--out", str(run_dir), *TINY, "--chunk", "2"]
    assert main([*base, "--eval-every", "2", "--eval-actions-per-chunk", "3"]) == 2
    assert capsys.readouterr().err.endswith("error: --eval-actions-per-chunk 3 exceeds --chunk 2: a plan holds --chunk "
                                            "actions; give at most that many\n")
    assert main([*base, "--eval-every", "2", "--eval-num-envs", "0"]) == 2
    assert capsys.readouterr().err.endswith("error: --eval-num-envs must be >= 1, got 0\n")
    assert main([*base, "--eval-actions-per-chunk", "2"]) == 2
    assert "--eval-actions-per-chunk sets the evaluations of --eval-every" in capsys.readouterr().err
    assert not run_dir.exists()


def test_compare_refuses_more_actions_per_plan_than_the_chunk(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "grid"
    assert main(["compare", "--out", str(out), "--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "1",
                 *TINY, "--chunk", "2", "--eval-actions-per-chunk", "3"]) == 2
    assert capsys.readouterr().err.endswith("error: --eval-actions-per-chunk 3 exceeds --chunk 2: a plan holds --chunk "
                                            "actions; give at most that many\n")
    assert not out.exists()
