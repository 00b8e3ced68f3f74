"""compare --workers and --ray (dopr_robot.grid): the same numbers as the grid run one cell at a time,
a failed cell named while the others finish, resuming across executors, Ray rerunning the cell of a
worker that died, and the install hint without Ray."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dopr_robot.cli import main
from dopr_robot.collect_config import CollectConfig
from dopr_robot.compare import CompareConfig, compare, run_cell, train_template
from dopr_robot.config import EvalConfig, config_to_dict
from dopr_robot.errors import UserError
from dopr_robot.grid import Execution, Tally, _duration, run_cells

TINY = dict(tasks=["Reach-v0"], optimizers=["adamw", "dopr-adamw"], seeds=2, demo=CollectConfig(episodes=3),
            train=train_template(steps=10, batch_size=16, policy_options={"width": 16, "depth": 1}),
            eval=EvalConfig(episodes=2, num_envs=2))
# The same grid on the command line.
TINY_ARGS = ["--tasks", "Reach-v0", "--optimizers", "adamw,dopr-adamw", "--seeds", "2", "--demo-episodes", "3",
             "--steps", "10", "--batch-size", "16", "--policy-options", '{"width": 16, "depth": 1}',
             "--eval-episodes", "2", "--eval-num-envs", "2", "--no-progress"]
RAY_REASON = 'compare --ray needs ray (pip install "dopr-robot[ray]")'
pytestmark = pytest.mark.usefixtures("figures_not_rasterized")  # no test here reads a figure


def numbers(out: Path) -> list[dict[str, str]]:
    """results.csv without the wall times (the only column that may differ between executors)."""
    with open(out / "results.csv") as f:
        return [{key: value for key, value in row.items() if key != "wall_time_s"} for row in csv.DictReader(f)]


def eval_files(out: Path) -> dict[Path, bytes]:
    """Each finished cell's eval.json and its content (a rewritten one differs: it holds the wall time)."""
    return {path: path.read_bytes() for path in sorted(out.glob("runs/*/*/seed*/eval.json"))}


def block(out: Path, optimizer: str, seed: int, config: CompareConfig) -> Path:
    """A stray file in a cell's run directory of the comparison ``config`` (saved in ``out``, as compare
    saves it before any cell runs): training refuses it (not a run), so the cell fails."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_config.json").write_text(json.dumps(config_to_dict(replace(config, out=str(out)))))
    stray = out / "runs" / "Reach-v0" / optimizer / f"seed{seed}" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("not a run\n")
    return stray


@pytest.fixture(scope="module")
def serial(tmp_path_factory, figures_not_rasterized) -> Path:
    """The tiny grid run one cell at a time, in this process, with one thread."""
    out = tmp_path_factory.mktemp("serial")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        compare(CompareConfig(out=str(out), **TINY), progress=False)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (it takes seconds to start); the grid uses it as it is."""
    ray = pytest.importorskip("ray", reason=RAY_REASON)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def test_workers_give_the_serial_numbers_name_a_failed_cell_and_resume(tmp_path: Path, serial: Path, one_thread,
                                                                       capsys, train_calls: list) -> None:
    out = tmp_path / "grid"
    stray = block(out, "adamw", 1, CompareConfig(out=str(out), **TINY))
    assert main(["compare", "--out", str(out), *TINY_ARGS, "--workers", "2", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "compare: Reach-v0 adamw seed 1 failed: " in err  # as it happened
    assert "dopr-robot compare: error: 1 of 4 cells failed (the others finished and are kept" in err
    assert f"\n  Reach-v0 adamw seed 1: {stray.parent} is not empty and holds no run" in err
    finished = eval_files(out)
    assert len(finished) == 3  # the other cells ran to the end
    saved = json.loads((out / "compare_config.json").read_text())
    assert not {"workers", "ray", "threads", "device"} & set(saved)  # execution settings, not grid settings

    stray.unlink()
    compare(CompareConfig(out=str(out), **TINY), progress=False)  # finished one cell at a time
    assert {path: content for path, content in eval_files(out).items() if path in finished} == finished
    assert train_calls == [("adamw", 1, False)]  # only the failed cell trains (here, in this process)
    assert len(eval_files(out)) == 4
    assert numbers(out) == numbers(serial)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--workers", "2", "--ray"], "--workers runs cells in local processes, --ray on a Ray cluster: give one of them"),
])
def test_execution_refusals(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert main(["compare", "--out", str(tmp_path / "grid"), *TINY_ARGS, *args]) == 2
    assert capsys.readouterr().err == f"dopr-robot compare: error: {message}\n"
    assert not (tmp_path / "grid").exists()


def test_ray_without_ray_installed_says_how_to_install_it(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the package
    assert main(["compare", "--out", str(tmp_path / "grid"), *TINY_ARGS, "--ray"]) == 2
    assert capsys.readouterr().err == ('dopr-robot compare: error: --ray needs Ray, which is not installed: '
                                       'pip install "dopr-robot[ray]"\n')
    assert not (tmp_path / "grid").exists()  # refused before any work


def test_ray_gives_the_serial_numbers(local_ray, tmp_path: Path, serial: Path) -> None:
    compare(CompareConfig(out=str(tmp_path), **TINY), progress=False, execution=Execution("ray", threads=1))
    assert numbers(tmp_path) == numbers(serial)
    for cell in CompareConfig(out=str(tmp_path), **TINY).cells():  # the same run directories, the same settings
        run = Path("runs", cell[0], cell[1], f"seed{cell[2]}", "config.json")
        ray_config, serial_config = (json.loads((out / run).read_text()) for out in (tmp_path, serial))
        assert {k: v for k, v in ray_config.items() if k not in ("data", "out")} == \
               {k: v for k, v in serial_config.items() if k not in ("data", "out")}


def test_a_failed_ray_grid_reruns_only_its_missing_cells(local_ray, tmp_path: Path) -> None:
    config = CompareConfig(out=str(tmp_path), **{**TINY, "optimizers": ["dopr-adamw"]})
    stray = block(tmp_path, "dopr-adamw", 0, config)
    with pytest.raises(UserError, match=r"1 of 2 cells failed .*\n  Reach-v0 dopr-adamw seed 0: .* holds no run"):
        compare(config, progress=False, execution=Execution("ray", threads=1))
    finished = eval_files(tmp_path)
    assert [path.parent.name for path in finished] == ["seed1"]

    stray.unlink()
    rows = compare(config, progress=False, execution=Execution("ray", threads=1))
    assert len(rows) == 2
    assert {path: content for path, content in eval_files(tmp_path).items() if path in finished} == finished


def die_once(config: CompareConfig, task: str, optimizer: str, seed: int, data: Path, device: str) -> None:
    """The cell body, but its first try kills its worker process (as a lost node would)."""
    marker = Path(config.out) / "died-once"
    if not marker.exists():
        marker.touch()
        os._exit(1)
    run_cell(config, task, optimizer, seed, data, device)


def test_ray_reruns_the_cell_of_a_worker_that_died(local_ray, tmp_path: Path, serial: Path) -> None:
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    config = CompareConfig(out=str(tmp_path), **{**TINY, "optimizers": ["adamw"], "seeds": 1})
    run_cells(die_once, config, config.cells(), {"Reach-v0": serial / "data" / "Reach-v0.hdf5"},
              Execution("ray", threads=1), progress=False)
    assert (tmp_path / "died-once").exists()
    assert (config.run_dir("Reach-v0", "adamw", 0) / "eval.json").exists()


SWEEP_ARGS = ["--tasks", "Reach-v0", "--seeds", "1", "--demo-episodes", "3", "--steps", "10", "--batch-size", "16",
              "--policy-options", '{"width": 16, "depth": 1}', "--eval-episodes", "2", "--eval-num-envs", "2",
              "--bases", "adamw", "--lrs", "0.001,1e9", "--dampings", "0.01,0.1", "--no-progress", "--threads", "1"]


def test_sweep_workers_run_a_stages_settings_at_once_with_the_serial_choice(tmp_path: Path, one_thread,
                                                                           monkeypatch, capsys) -> None:
    """Every setting of the sweep has a single cell here: --workers must spread the settings of a stage
    (the lr grid, then the dampings), not the cells of one setting; a diverging lr is listed as failed."""
    import dopr_robot.sweep as sweep_module

    grids = []
    real = sweep_module.run_cells
    monkeypatch.setattr(sweep_module, "run_cells", lambda cell, config, cells, *a, **k: (
        grids.append(sorted(name for _, name, _ in cells)), real(cell, config, cells, *a, **k))[1])
    assert main(["sweep", "--out", str(tmp_path / "serial"), *SWEEP_ARGS]) == 0
    assert grids == []  # one setting after another
    err = capsys.readouterr().err.splitlines()
    told = [line.split(" seed ")[0].split(" (nan")[0] for line in err if ": [1/1] " in line or ": failed: " in line]
    assert told == ["sweep adamw lr 0.001, weight decay 0: [1/1] Reach-v0 adamw",  # each line names its setting
                    "sweep adamw lr 1e+09, weight decay 0: failed: the training loss became non-finite",
                    "sweep dopr-adamw lr 0.001, weight decay 0, damping 0.01: [1/1] Reach-v0 dopr-adamw",
                    "sweep dopr-adamw lr 0.001, weight decay 0, damping 0.1: [1/1] Reach-v0 dopr-adamw"]
    assert main(["sweep", "--out", str(tmp_path / "workers"), *SWEEP_ARGS, "--workers", "2"]) == 0
    assert grids == [["adamw@lr0.001_wd0", "adamw@lr1e+09_wd0"],
                     ["dopr-adamw@lr0.001_wd0_damping0.01", "dopr-adamw@lr0.001_wd0_damping0.1"]]
    capsys.readouterr()
    chosen = [json.loads((tmp_path / name / "optimizer_settings.json").read_text()) for name in ("serial", "workers")]
    assert chosen[0] == chosen[1] and chosen[0]["adamw"]["lr"] == 0.001
    reports = [(tmp_path / name / "sweep.md").read_text().replace(str(tmp_path / name), "OUT") for name in ("serial", "workers")]
    assert reports[0] == reports[1] and "| 1e+09 | 0 | failed: " in reports[1]
    for name in ("adamw/lr0.001_wd0", "dopr-adamw/lr0.001_wd0_damping0.1"):
        assert numbers(tmp_path / "serial" / name) == numbers(tmp_path / "workers" / name)



def quick_cell(config, task: str, optimizer: str, seed: int, data: Path, device: str) -> None:
    """A cell body that does nothing."""


def test_without_bars_a_line_per_finished_cell_with_the_time_left(capsys, monkeypatch) -> None:
    clock = iter([100.0, 160.0, 280.0, 400.0])  # the start, then each cell's end: 60 s, 180 s and 300 s in
    monkeypatch.setattr("dopr_robot.grid.time", SimpleNamespace(monotonic=lambda: next(clock)))
    tally = Tally(5, 2, progress=False, label="compare")  # two cells were finished by an earlier call
    tally.finished(("Reach-v0", "adamw", 0), failed=False)
    tally.finished(("Reach-v0", "adamw", 1), failed=True)
    tally.finished(("Reach-v0", "adamw", 2), failed=False)
    # the time left: this call's mean time per finished cell times the cells left
    assert capsys.readouterr().err.splitlines() == [
        "compare: [3/5] Reach-v0 adamw seed 0 done, 1 min since the start, about 2 min left",
        "compare: [4/5] Reach-v0 adamw seed 1 failed, 3 min since the start, about 2 min left",
        "compare: [5/5] Reach-v0 adamw seed 2 done, 5 min since the start"]
    assert [_duration(s) for s in (59.4, 90, 3599, 3600 + 5 * 60 + 20)] == ["59 s", "2 min", "1 h 00 min", "1 h 05 min"]


@pytest.mark.parametrize("progress", [False, True], ids=["no-bars", "bars"])
def test_the_cells_of_a_run_are_told_as_they_finish_without_bars(capsys, progress: bool) -> None:
    cells = [("Reach-v0", "adamw", seed) for seed in range(2)]
    run_cells(quick_cell, None, cells, {"Reach-v0": Path("unused")}, progress=progress, label="sweep")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sweep: [")]
    if progress:
        assert lines == []
    else:
        assert [line.split(",")[0] for line in lines] == ["sweep: [1/2] Reach-v0 adamw seed 0 done",
                                                          "sweep: [2/2] Reach-v0 adamw seed 1 done"]
