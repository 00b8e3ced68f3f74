"""`dopr-robot eval` / `video` on a tiny trained run: result JSON, plot, videos, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from dopr_robot.checkpoint import load_checkpoint, policy_from_checkpoint
from dopr_robot.cli import main
from dopr_robot.config import EvalConfig, TrainConfig
from dopr_robot.errors import UserError
from dopr_robot.evaluate import DEFAULT_EVAL_SEED, evaluate_checkpoint, make_evaluator
from dopr_robot.evaluate.plots import plot_compounding
from dopr_robot.evaluate.video import BANNER, GAP, record_video, write_video
from dopr_robot.train import train

HORIZON = 12


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, demo_file) -> Path:
    root = tmp_path_factory.mktemp("eval")
    data = demo_file("Reach-v0", 4, env_kwargs={"horizon": HORIZON})
    config = TrainConfig(data=str(data), out=str(root / "run"), steps=20, batch_size=16, lr=3e-3,
                         warmup_steps=2, val_every=10, checkpoint_every=20, log_every=10, history=2, chunk=3,
                         policy_options={"width": 32, "depth": 1})
    evaluator = make_evaluator("Reach-v0", EvalConfig(episodes=2, num_envs=2, with_expert=False),
                               env_kwargs={"horizon": HORIZON})
    train(config, evaluator=evaluator, evaluate_every=20, progress=False)
    return root / "run"


def test_training_logs_the_evaluator(run_dir: Path) -> None:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if "eval_success_rate" in line]
    assert len(evaluated) == 1 and evaluated[0]["step"] == 20 and evaluated[0]["eval_episodes"] == 2


def test_eval_writes_json_with_the_fields_and_a_plot(run_dir: Path, tmp_path: Path, capsys) -> None:
    out, plot = tmp_path / "result.json", tmp_path / "deviation.png"
    assert main(["eval", "--checkpoint", str(run_dir), "--episodes", "5", "--num-envs", "2", "--seed", "100",
                 "--actions-per-chunk", "2", "--out", str(out), "--plot", str(plot), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "validation loss" in printed and "success rate" in printed and "J_traj" in printed
    result = json.loads(out.read_text())
    assert result["format"] == "dopr-robot/eval/1" and result["task"] == "Reach-v0"
    assert result["env_kwargs"] == {"horizon": HORIZON} and result["actions_per_chunk"] == 2
    assert [r["seed"] for r in result["records"]] == list(range(100, 105))
    assert all(r["length"] == HORIZON for r in result["records"])
    assert set(result["records"][0]) >= {"seed", "return", "length", "success", "first_success_step",
                                         "time_to_failure", "j_traj", "action_error_on_policy", "action_error_on_expert"}
    closed = result["closed_loop"]
    assert closed["n"] == 5 and 0 <= closed["success_ci"][0] <= closed["success_rate"] <= closed["success_ci"][1] <= 1
    assert closed["return_ci"][0] <= closed["mean_return"] <= closed["return_ci"][1]
    validation = result["validation"]
    assert validation["val_loss"] is not None and validation["val_loss_step"] == 20 and validation["best_val_loss"] is not None
    curve = result["compounding"]["state_deviation"]
    assert len(curve["mean"]) == HORIZON + 1 and curve["mean"][0] == 0.0
    assert result["compounding"]["action_error_ratio"]["value"] > 0
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the compounding summaries reports read, under these names
    divergence = result["compounding"]["time_to_divergence"]
    assert set(divergence) >= {"mean", "ci", "threshold", "diverged_fraction", "diverged_ci", "horizon"}
    assert divergence["horizon"] == HORIZON and 0 <= divergence["mean"] <= HORIZON
    deviation_at = result["compounding"]["deviation_at"]
    assert list(deviation_at) == ["0.1", "0.25", "0.5", "1.0"]
    assert [entry["t"] for entry in deviation_at.values()] == [1, 3, 6, 12]
    assert {"time_to_divergence", "diverged"} <= set(result["records"][0])
    # what was evaluated, down to the data it was trained on
    checkpoint = result["checkpoint"]
    assert checkpoint["step"] == 20 and checkpoint["dataset"]["task"] == "Reach-v0"
    assert checkpoint["dataset"]["episodes"] == 4


def test_video_side_by_side_decodes_with_the_right_frames(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pair.mp4"
    assert main(["video", "--checkpoint", str(run_dir), "--out", str(out), "--episodes", "2",
                 "--width", "64", "--height", "48"]) == 0
    frames = iio.imread(out)
    assert frames.shape[0] == 2 * (HORIZON + 1)  # fixed-length episodes: reset frame + one per step, each
    assert frames.shape[2] >= 2 * 64 and frames.shape[1] >= 48
    assert frames[:, 20:, :].mean() > 20  # rendered scene, not black


def test_policy_alone_gif_and_eval_videos(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "alone.gif"
    assert main(["video", "--checkpoint", str(run_dir), "--out", str(out), "--episodes", "1", "--no-expert",
                 "--width", "48", "--height", "48"]) == 0
    frames = iio.imread(out)
    assert frames.shape[:3] == (HORIZON + 1, 48 + 18, 48) and frames.mean() > 20
    result = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--episodes", "2", "--no-expert", "--videos", "1",
                 "--out", str(result), "--no-progress"]) == 0
    assert iio.imread(result.with_suffix(".mp4")).shape[0] == HORIZON + 1
    assert json.loads(result.read_text())["compounding"] is None


def _without_task(run_dir: Path, tmp_path: Path) -> Path:
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    checkpoint["dataset"]["task"] = None
    torch.save(checkpoint, tmp_path / "no_task.pt")
    return tmp_path / "no_task.pt"


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{tmp}/missing"], "no checkpoint at"),
    (["--checkpoint", "{tmp}/garbage.pt"], "not a readable checkpoint"),
    (["--checkpoint", "{tmp}/no_task.pt"], "trained on data without env_args: pass --task NAME"),
    (["--checkpoint", "{run}", "--task", "Nope-v0"], "unknown task 'Nope-v0'"),
    (["--checkpoint", "{run}", "--task", "Humanoid-v5"], "Humanoid-v5 is unavailable"),  # no expert weights (below)
    (["--checkpoint", "{run}", "--task", "Push-v0", "--no-expert"], "evaluate it on the task it was trained on"),
    (["--checkpoint", "{run}", "--actions-per-chunk", "4"], "--actions-per-chunk must be between 1 and the policy's chunk (3)"),
    (["--checkpoint", "{run}", "--episodes", "0"], "--episodes must be >= 1"),
])
def test_bad_inputs_are_one_line_and_exit_2(run_dir: Path, tmp_path: Path, capsys, monkeypatch, args: list[str],
                                           message: str) -> None:
    from envs.experts import sb3 as sb3_weights

    monkeypatch.setattr(sb3_weights, "WEIGHTS_ROOT", tmp_path / "no-weights")  # the locomotion experts unshipped
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    _without_task(run_dir, tmp_path)
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    assert main(["eval", *args, "--out", str(tmp_path / "x.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("dopr-robot eval: error:")
    assert not (tmp_path / "x.json").exists()


def test_video_rejects_other_suffixes(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["video", "--checkpoint", str(run_dir), "--out", str(tmp_path / "v.avi")]) == 2
    assert "--out must end in .mp4 or .gif" in capsys.readouterr().err


def test_record_video_takes_a_panel_size(run_dir: Path, tmp_path: Path) -> None:
    policy = policy_from_checkpoint(load_checkpoint(run_dir))
    video = record_video(policy, "Reach-v0", tmp_path / "sized.gif", [DEFAULT_EVAL_SEED],
                         env_kwargs={"horizon": HORIZON}, size=(64, 40))
    frames = iio.imread(tmp_path / "sized.gif")
    assert video["size"] == [64, 40] and frames.shape[:3] == (HORIZON + 1, 40 + BANNER, 2 * 64 + GAP)
    with pytest.raises(UserError, match="--size must be whole pixels, at least 16x16, got 8x40"):
        record_video(policy, "Reach-v0", tmp_path / "tiny.gif", [DEFAULT_EVAL_SEED], size=(8, 40))


def test_write_video_scales_frames_to_a_size(tmp_path: Path) -> None:
    frames = [np.full((30, 50, 3), 40 * i, dtype=np.uint8) for i in range(3)]
    assert write_video(tmp_path / "scaled.gif", [frames], fps=10, size=(100, 60)) == 3
    assert iio.imread(tmp_path / "scaled.gif").shape[:3] == (3, 60, 100)


def test_plot_reads_a_result_without_the_divergence_summaries(run_dir: Path, tmp_path: Path) -> None:
    result = evaluate_checkpoint(run_dir, EvalConfig(episodes=2, num_envs=2)).to_dict()
    for key in ("time_to_divergence", "deviation_at"):
        del result["compounding"][key]  # a file written before they existed
    assert plot_compounding(result, tmp_path / "old.png").stat().st_size > 10_000


# --- eval and video options are one EvalConfig ---------------------------------------------------

EVAL_FLAGS = ["--episodes", "7", "--seed", "5", "--no-expert", "--no-ema", "--actions-per-chunk", "2",
              "--size", "64x48", "--fps", "5"]
EVAL_SETTINGS = dict(episodes=7, seed=5, with_expert=False, use_ema=False, actions_per_chunk=2, size=(64, 48), fps=5)


@pytest.mark.parametrize("args, expected", [
    ([], dict(num_envs=16)),  # eval's own default
    ([*EVAL_FLAGS, "--num-envs", "3"], dict(EVAL_SETTINGS, num_envs=3)),
])
def test_eval_flags_map_to_an_eval_config(run_dir: Path, tmp_path: Path, args: list[str], expected: dict) -> None:
    """What `eval` writes is the evaluation with those settings made through the Python API, and the
    file shows each setting (episodes, seeds, envs, actions per chunk, expert, EMA)."""
    out = tmp_path / "result.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--out", str(out), "--no-progress", *args]) == 0
    result = json.loads(out.read_text())
    settings = EvalConfig(**expected)
    assert [r["seed"] for r in result["records"]] == settings.seeds
    assert (result["num_envs"], result["actions_per_chunk"]) == (settings.num_envs, settings.actions_per_chunk)
    assert (result["compounding"] is not None) == settings.with_expert
    assert result["checkpoint"]["use_ema"] == settings.use_ema
    direct = evaluate_checkpoint(run_dir, settings).to_dict()
    assert {**result, "elapsed_s": None} == {**direct, "elapsed_s": None}


@pytest.mark.parametrize("args, expected", [
    ([], dict(episodes=2)),  # video's own default
    (EVAL_FLAGS, EVAL_SETTINGS),
    (["--width", "64"], dict(episodes=2, size=(64, 240))),  # the flags before --size still work
])
def test_video_flags_map_to_an_eval_config(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           args: list[str], expected: dict) -> None:
    import dopr_robot.commands.video as video_command
    from dopr_robot.config import EvalConfig

    seen = []
    monkeypatch.setattr(video_command, "render", lambda policy, task, out, settings, **kw: seen.append(settings) or {
        "path": str(out), "episodes": settings.episodes, "frames": 0, "with_expert": settings.with_expert})
    assert main(["video", "--checkpoint", str(run_dir), "--out", str(tmp_path / "v.mp4"), *args]) == 0
    assert seen == [EvalConfig(**expected)]


def test_video_size_sets_the_panel_size(run_dir: Path, tmp_path: Path, capsys) -> None:
    from dopr_robot.evaluate.video import BANNER, GAP

    out = tmp_path / "sized.mp4"
    assert main(["video", "--checkpoint", str(run_dir), "--out", str(out), "--episodes", "1", "--size", "160x120"]) == 0
    frames = iio.imread(out)
    assert frames.shape == (HORIZON + 1, 120 + BANNER, 2 * 160 + GAP, 3)  # policy | expert, each 160x120 under its banner
    assert main(["video", "--checkpoint", str(run_dir), "--out", str(out), "--size", "8x8"]) == 2
    assert capsys.readouterr().err == "dopr-robot video: error: --size must be at least 16x16 pixels, got 8x8\n"
    with pytest.raises(SystemExit):
        main(["video", "--checkpoint", str(run_dir), "--out", str(out), "--size", "big"])
    assert "expected WIDTHxHEIGHT in pixels like 320x240, got 'big'" in capsys.readouterr().err
