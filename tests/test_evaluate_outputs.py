"""eval and video outputs: nothing the toolkit did not write for the same purpose is replaced without
--overwrite, and every destination is checked before the rollouts (one line, exit 2)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import dopr_robot.commands.video as video_command
import dopr_robot.evaluate as evaluate_module
from dopr_robot.cli import main
from dopr_robot.config import TrainConfig
from dopr_robot.train import train

HORIZON = 12
QUICK = ["--episodes", "2", "--num-envs", "2", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, demo_file) -> Path:
    data = demo_file("Reach-v0", 4, env_kwargs={"horizon": HORIZON})
    out = tmp_path_factory.mktemp("outputs") / "run"
    train(TrainConfig(data=str(data), out=str(out), steps=10, batch_size=16, warmup_steps=2, val_every=10,
                      checkpoint_every=10, log_every=10, policy_options={"width": 16, "depth": 1}), progress=False)
    return out


@pytest.fixture
def no_rollouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any evaluation or video fails the test: a refused destination must be refused before them."""

    def rolled_out(*args, **kwargs):
        raise AssertionError("rolled out before the destination was checked")

    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", rolled_out)
    monkeypatch.setattr(video_command, "render", rolled_out)


@pytest.fixture
def bad_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` with a file ``keep.txt`` (a path under it is not a directory) and a directory
    ``readonly`` that may not be written (mocked: the tests run as root, who may write anywhere)."""
    (tmp_path / "keep.txt").write_text("{}")
    (tmp_path / "readonly").mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path).name != "readonly" and access(path, mode))
    return tmp_path


def _refused(argv: list[str], capsys: pytest.CaptureFixture, *expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(text in err for text in expected), err
    return err


def _foreign_files(run_dir: Path, tmp_path: Path, demo_file) -> dict[str, Path]:
    files = {"demonstrations": tmp_path / "reach.hdf5", "checkpoint": tmp_path / "checkpoint.pt",
             "text": tmp_path / "keep.txt", "other JSON": tmp_path / "other.json"}
    shutil.copy(demo_file("Reach-v0", 4, env_kwargs={"horizon": HORIZON}), files["demonstrations"])
    shutil.copy(run_dir / "checkpoint.pt", files["checkpoint"])
    files["text"].write_text("{}")
    files["other JSON"].write_text(json.dumps({"format": "something else", "records": []}))
    return files


@pytest.mark.parametrize("kind", ["demonstrations", "checkpoint", "text", "other JSON"])
def test_eval_out_never_replaces_a_file_eval_did_not_write(run_dir: Path, tmp_path: Path, capsys, demo_file,
                                                          no_rollouts, kind: str) -> None:
    path = _foreign_files(run_dir, tmp_path, demo_file)[kind]
    before = path.read_bytes()
    _refused(["eval", "--checkpoint", str(run_dir), "--out", str(path), *QUICK], capsys, str(path), "--overwrite")
    assert path.read_bytes() == before


def test_eval_replaces_its_own_json_and_plot_and_others_only_with_overwrite(run_dir: Path, tmp_path: Path,
                                                                         capsys) -> None:
    out, plot = tmp_path / "e.json", tmp_path / "p.png"
    for _ in range(2):  # a rerun replaces what the first run wrote
        assert main(["eval", "--checkpoint", str(run_dir), "--out", str(out), "--plot", str(plot), *QUICK]) == 0
    first = json.loads(out.read_text())
    assert first["format"] == evaluate_module.FORMAT and first["closed_loop"]["n"] == 2
    keep = tmp_path / "keep.txt"
    keep.write_text("{}")
    assert main(["eval", "--checkpoint", str(run_dir), "--out", str(keep), "--overwrite", *QUICK]) == 0
    assert json.loads(keep.read_text())["format"] == evaluate_module.FORMAT
    capsys.readouterr()


def test_eval_does_not_replace_a_comparison_cells_evaluation(run_dir: Path, tmp_path: Path, capsys,
                                                            no_rollouts) -> None:
    cell = tmp_path / "eval.json"
    cell.write_text(json.dumps({"format": evaluate_module.FORMAT, "records": [],
                                "cell": {"task": "Reach-v0", "optimizer": "adamw", "seed": 0}}))
    before = cell.read_bytes()
    _refused(["eval", "--checkpoint", str(run_dir), "--out", str(cell), *QUICK], capsys, str(cell),
             "comparison", "--out", "--overwrite")
    assert cell.read_bytes() == before


@pytest.mark.parametrize("out, message", [
    ("{tmp}", "is a directory"),
    ("", "is empty"),
    ("{tmp}/keep.txt/e.json", "is a file, not a directory"),
    ("{tmp}/readonly/e.json", "no permission to write"),
])
def test_eval_destination_is_checked_before_the_rollouts(run_dir: Path, bad_places: Path, capsys, no_rollouts,
                                                         out: str, message: str) -> None:
    _refused(["eval", "--checkpoint", str(run_dir), "--out", out.format(tmp=bad_places), *QUICK], capsys, message)


@pytest.mark.parametrize("plot, message", [
    ("{tmp}/keep.png", "--overwrite"),  # an existing file that is not a plot eval drew
    ("{tmp}/keep.txt/p.png", "is a file, not a directory"),
    ("{tmp}", "--plot must be a .png file"),
])
def test_eval_plot_destination_is_checked_before_the_rollouts(run_dir: Path, tmp_path: Path, capsys, no_rollouts,
                                                              plot: str, message: str) -> None:
    (tmp_path / "keep.txt").write_text("{}")
    (tmp_path / "keep.png").write_bytes(b"not our plot")
    _refused(["eval", "--checkpoint", str(run_dir), "--out", str(tmp_path / "e.json"), "--plot",
              plot.format(tmp=tmp_path), *QUICK], capsys, message)
    assert (tmp_path / "keep.png").read_bytes() == b"not our plot" and not (tmp_path / "e.json").exists()


def test_eval_video_destination_is_checked_before_the_rollouts(run_dir: Path, tmp_path: Path, capsys,
                                                               no_rollouts) -> None:
    (tmp_path / "e.mp4").write_bytes(b"someone's video")
    _refused(["eval", "--checkpoint", str(run_dir), "--out", str(tmp_path / "e.json"), "--videos", "1", *QUICK],
             capsys, str(tmp_path / "e.mp4"), "--overwrite")
    assert (tmp_path / "e.mp4").read_bytes() == b"someone's video"


@pytest.mark.parametrize("out, message", [
    ("{tmp}/v.mp4", "--overwrite"),  # exists
    ("{tmp}/keep.txt/v.mp4", "is a file, not a directory"),
    ("{tmp}/folder.mp4", "is a directory"),
    ("{tmp}/readonly/v.gif", "no permission to write"),
    ("", "--out must end in .mp4 or .gif, got ''"),
])
def test_video_destination_is_checked_before_the_rollouts(run_dir: Path, bad_places: Path, capsys, no_rollouts,
                                                          out: str, message: str) -> None:
    (bad_places / "v.mp4").write_bytes(b"someone's video")
    (bad_places / "folder.mp4").mkdir()
    _refused(["video", "--checkpoint", str(run_dir), "--out", out.format(tmp=bad_places), "--threads", "1"], capsys,
             message)
    assert (bad_places / "v.mp4").read_bytes() == b"someone's video"


def test_video_replaces_a_file_with_overwrite(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "v.gif"
    out.write_bytes(b"someone's video")
    argv = ["video", "--checkpoint", str(run_dir), "--out", str(out), "--episodes", "1", "--size", "32x24",
            "--threads", "1"]
    assert main([*argv, "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"GIF8"
    capsys.readouterr()


def test_video_of_a_task_with_other_sizes_is_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    _refused(["video", "--checkpoint", str(run_dir), "--out", str(tmp_path / "v.gif"), "--task", "Push-v0",
              "--episodes", "1", "--size", "32x24", "--threads", "1"], capsys,
             "the policy takes 18-d observations and gives 3-d actions", "Push-v0")
    assert not (tmp_path / "v.gif").exists()
