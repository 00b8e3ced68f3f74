"""`compare` (and `sweep`, `quickstart`) never lose a user's files, never report data they did not
use, and never leave a directory that the next command cannot continue from: every refusal is one
line with exit 2, made before anything is written, and the fix it names works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import demos
from dopr_robot.cli import main

GRID = ["--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "1", "--steps", "20", "--batch-size", "32",
        "--policy-options", '{"width": 16, "depth": 1}', "--eval-episodes", "2", "--eval-num-envs", "2",
        "--demo-episodes", "3", "--threads", "1", "--device", "cpu", "--no-progress"]
SWEEP = [*GRID[:2], *GRID[4:], "--bases", "adamw", "--lrs", "0.001", "--dampings", "0.01"]
CELL = Path("runs") / "Reach-v0" / "adamw" / "seed0"
pytestmark = pytest.mark.usefixtures("figures_not_rasterized")  # no test here reads a figure


def compare(out: Path | str, *extra: str) -> int:
    return main(["compare", "--out", str(out), *GRID, *extra])


def refused(capsys: pytest.CaptureFixture) -> str:
    """The one line of a refusal (exit 2 checked by the caller), without the command's prefix."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.split("error: ", 1)[1]


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, figures_not_rasterized) -> Path:
    """A finished one-cell comparison (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("grid") / "cmp"
    assert compare(out) == 0
    return out


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reach-v0 demonstrations collected otherwise than GRID asks (2 episodes, noise 1.0)."""
    path = tmp_path_factory.mktemp("data") / "noisy.hdf5"
    demos.collect("Reach-v0", 2, path, noise=1.0, progress=False)
    return path


def copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cmp"
    shutil.copytree(finished, out)
    return out


def test_a_directory_of_other_files_is_refused_untouched_and_overwrite_keeps_foreign_files(
        tmp_path: Path, noisy: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "u3"
    (out / "data").mkdir(parents=True)
    (out / "results.csv").write_text("t\n")
    (out / "summary.md").write_text("n\n")
    shutil.copy(noisy, out / "data" / "Reach-v0.hdf5")
    before = tree(out)
    assert compare(out) == 2
    assert refused(capsys) == (f"{out} is not empty and holds no comparison (no compare_config.json); choose another "
                               "--out, or pass --overwrite to make the comparison there (only the files compare "
                               "writes are replaced)\n")
    assert tree(out) == before

    (out / "notes.txt").write_text("mine\n")
    assert compare(out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine\n"
    assert (out / "results.csv").read_text().startswith("task,optimizer,seed")
    recorded = demos.load(out / "data" / "Reach-v0.hdf5").metadata  # collected as asked, not the noisy file reused
    assert (recorded["episodes"], recorded["noise"], recorded["seed"]) == (3, 0.0, 0)


def test_collected_demonstrations_that_differ_from_the_ask_are_refused_then_recollected_under_overwrite(
        finished: Path, tmp_path: Path, noisy: Path, capsys: pytest.CaptureFixture) -> None:
    out = copy(finished, tmp_path)
    data = out / "data" / "Reach-v0.hdf5"
    shutil.copy(noisy, data)
    before = tree(out)
    assert compare(out) == 2
    message = refused(capsys)
    assert message.startswith(f"{data} is not the demonstrations this comparison collects (episodes 2, asked 3; "
                               "noise 1.0, asked 0.0); delete it (the same command then collects them)"), message
    assert tree(out) == before
    assert compare(out, "--overwrite") == 0
    assert demos.load(data).metadata["episodes"] == 3
    assert json.loads((out / CELL / "eval.json").read_text())["checkpoint"]["dataset"]["episodes"] == 3


def test_a_comparison_with_other_settings_is_refused_and_overwrite_redoes_every_cell(
        finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = copy(finished, tmp_path)
    assert compare(out, "--steps", "24") == 2
    assert refused(capsys) == (f"{out} holds a comparison made with other settings (changed: train.steps (20 -> 24), "
                               "train.checkpoint_every (5 -> 6)); use a new --out directory, or pass --overwrite to "
                               "make the comparison afresh there\n")
    assert compare(out, "--steps", "24", "--overwrite") == 0
    assert json.loads((out / CELL / "config.json").read_text())["steps"] == 24
    evaluation = json.loads((out / CELL / "eval.json").read_text())
    assert evaluation["checkpoint"]["step"] == 24 and evaluation["cell"]["resumed"] is False


@pytest.mark.parametrize("command", ["compare", "sweep", "quickstart"])
def test_out_naming_a_file_or_a_path_under_one_is_one_line_before_any_work(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    file = tmp_path / "x.txt"
    file.write_text("hi\n")
    grid = {"compare": GRID, "sweep": SWEEP,
            "quickstart": ["--task", "Reach-v0", "--device", "cpu", "--no-progress"]}[command]
    assert main([command, "--out", str(file), *grid]) == 2
    what = "sweep" if command == "sweep" else "comparison"
    assert refused(capsys) == f"{file} is a file; the {what} (--out) needs a directory (choose another path)\n"
    assert main([command, "--out", str(file / "sub"), *grid]) == 2
    assert refused(capsys) == f"{file / 'sub'}: {file} is a file, not a directory; choose a path outside it\n"
    assert file.read_text() == "hi\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_an_empty_out_is_refused(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    grid = SWEEP if command == "sweep" else GRID
    assert main([command, "--out", "", *grid]) == 2
    assert "is empty; give a directory path" in refused(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_into_a_directory_of_other_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "results.csv").write_text("t\n")
    assert main(["sweep", "--out", str(tmp_path), *SWEEP]) == 2
    assert refused(capsys).startswith(f"{tmp_path} is not empty and holds no sweep (no sweep_config.json)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def _nan_copy(source: Path, path: Path) -> Path:
    shutil.copy(source, path)
    with h5py.File(path, "r+") as file:
        actions = file["data/demo_0/actions"]
        values = actions[()]
        values[0, 0] = np.nan
        actions[...] = values
    return path


def test_late_checks_run_before_anything_is_written_and_the_corrected_command_runs(
        finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c8"
    assert compare(out, "--demo-noise", "-1") == 2
    assert refused(capsys).startswith("--demo-noise must be a finite number >= 0")
    good = finished / "data" / "Reach-v0.hdf5"
    truncated = tmp_path / "trunc.hdf5"
    truncated.write_bytes(good.read_bytes()[:20_000])
    for data in (tmp_path / "missing.hdf5", truncated, _nan_copy(good, tmp_path / "nan.hdf5")):
        assert compare(out, "--data", json.dumps({"Reach-v0": str(data)})) == 2
        assert str(data) in refused(capsys)
    assert not out.exists()
    assert compare(out, "--demo-noise", "0.1") == 0


def test_another_tasks_demonstrations_are_caught_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    push = tmp_path / "push.hdf5"
    demos.collect("Push-v0", 1, push, progress=False)
    out = tmp_path / "c10"
    assert compare(out, "--data", json.dumps({"Reach-v0": str(push)})) == 2
    assert refused(capsys) == (f"--data gives {push} for Reach-v0, but it holds demonstrations of Push-v0: give a file "
                               "of Reach-v0 demonstrations in --data (e.g. from `dopr-robot collect --task Reach-v0`)\n")
    assert not out.exists()


def test_data_that_is_not_a_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert compare(tmp_path / "c6", "--data", '{"Reach-v0": 5}') == 2
    assert refused(capsys).startswith('--data maps each task to a demonstrations file path (a JSON string), got {"Reach-v0": 5}')
    assert not (tmp_path / "c6").exists()


def test_a_plain_eval_over_a_cell_is_named_and_deleting_it_as_told_works(
        finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = copy(finished, tmp_path)
    evaluation = out / CELL / "eval.json"
    record = json.loads(evaluation.read_text())
    del record["cell"]  # what `dopr-robot eval --checkpoint CELL` writes there: the evaluation without the cell
    evaluation.write_text(json.dumps(record))
    assert compare(out) == 2
    message = refused(capsys)
    assert message.startswith(f"{evaluation} is not this comparison's evaluation of the cell (Reach-v0, adamw, seed 0)")
    assert message.endswith("Move it elsewhere or delete it: the same command then evaluates the cell again from "
                            "its checkpoint\n")
    evaluation.unlink()
    assert compare(out) == 0
    assert json.loads(evaluation.read_text())["cell"]["resumed"] is True
    assert compare(out) == 0  # and again: nothing left to redo


def test_a_corrupt_cell_checkpoint_names_the_directory_to_delete_and_deleting_it_works(
        finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = copy(finished, tmp_path)
    cell = out / CELL
    checkpoint = cell / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    (cell / "eval.json").unlink()
    assert compare(out) == 2
    message = refused(capsys)
    assert message.endswith(f"; delete the cell's directory {cell} and the same command trains the cell again\n"), message
    shutil.rmtree(cell)
    assert compare(out) == 0
    assert json.loads((cell / "eval.json").read_text())["cell"]["resumed"] is False


def test_demo_success_only_reaches_the_collection_and_is_part_of_the_resume_check(
        finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Reach-v0 under noise 0.5: the episodes from reset seeds 0, 1 and 2 fail, 3 and 4 succeed.
    out = tmp_path / "only"
    assert compare(out, "--demo-noise", "0.5", "--demo-success-only") == 0
    data = demos.load(out / "data" / "Reach-v0.hdf5")
    dropped = data.metadata["dropped_seeds"]
    assert data.metadata["success_only"] is True and dropped[:3] == [0, 1, 2]
    assert [e.seed for e in data.episodes] == sorted(set(range(data.metadata["attempts"])) - set(dropped))
    assert [e.seed for e in data.episodes][:2] == [3, 4] and all(e.is_success for e in data.episodes)
    saved = json.loads((out / "compare_config.json").read_text())["demo"]
    assert saved == {"episodes": 3, "seed": 0, "noise": 0.5, "success_only": True, "max_attempts": 0,
                     "cameras": [], "image_size": [64, 64]}

    other = copy(finished, tmp_path)  # its cells trained on every episode collected
    capsys.readouterr()  # what the finished run printed
    assert compare(other, "--demo-success-only") == 2
    assert "(changed: demo.success_only (False -> True))" in refused(capsys)


def test_a_comparison_saved_with_flat_demonstration_keys_resumes_and_serves_as_config(
        finished: Path, tmp_path: Path) -> None:
    out = copy(finished, tmp_path)
    saved = json.loads((out / "compare_config.json").read_text())
    demo = saved.pop("demo")
    saved |= {"demo_episodes": demo["episodes"], "demo_noise": demo["noise"], "demo_seed": demo["seed"]}
    (out / "compare_config.json").write_text(json.dumps(saved))
    evaluation = (out / CELL / "eval.json").read_bytes()
    assert compare(out) == 0  # the same comparison: nothing redone
    assert (out / CELL / "eval.json").read_bytes() == evaluation
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(saved))
    assert main(["compare", "--config", str(flat), "--out", str(out), "--threads", "1", "--device", "cpu",
                 "--no-progress"]) == 0
    assert (out / CELL / "eval.json").read_bytes() == evaluation


def test_a_sweeps_collected_demonstrations_that_differ_are_refused(tmp_path: Path, noisy: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *SWEEP]) == 0
    data = out / "data" / "Reach-v0.hdf5"
    shutil.copy(noisy, data)
    before = tree(out)
    capsys.readouterr()  # what the finished sweep printed
    assert main(["sweep", "--out", str(out), *SWEEP]) == 2
    assert refused(capsys).startswith(f"{data} is not the demonstrations this comparison collects (episodes 2, asked 3; "
                                      "noise 1.0, asked 0.0)")
    assert tree(out) == before


def test_eval_every_evaluates_each_cell_during_training(tmp_path: Path) -> None:
    out = tmp_path / "every"
    assert compare(out, "--eval-every", "10") == 0
    lines = [json.loads(line) for line in (out / CELL / "metrics.jsonl").read_text().splitlines()]
    evaluations = [line for line in lines if "eval_success_rate" in line]
    assert [(line["step"], line["eval_episodes"]) for line in evaluations] == [(10, 2), (20, 2)]
