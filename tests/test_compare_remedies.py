"""compare --remedies: the remedy as a grid axis (same cells serially and with workers), a killed grid
resuming without retraining finished cells, an existing comparison resuming unchanged, the summary's
paired rows against a recomputation from results.csv, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import dopr_robot.train as train_module
from dopr_robot.cli import main
from dopr_robot.collect_config import CollectConfig
from dopr_robot.compare import CompareConfig, compare, train_template
from dopr_robot.config import EvalConfig
from dopr_robot.errors import UserError
from dopr_robot.grid import Execution

TINY = dict(tasks=["Reach-v0"], optimizers=["adamw", "dopr-adamw"], seeds=2, demo=CollectConfig(episodes=2),
            remedies=["none", "noise:0.1", "dagger:1"], dagger_episodes=2, dagger_steps=4,
            train=train_template(steps=8, batch_size=16, policy_options={"width": 16, "depth": 1}),
            eval=EvalConfig(episodes=2, num_envs=2, with_expert=False))
ARGS = ["compare", "--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "1", "--demo-episodes", "2",
        "--steps", "4", "--batch-size", "16", "--no-progress"]
pytestmark = pytest.mark.usefixtures("figures_not_rasterized")  # no test here reads a figure


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def serial(tmp_path_factory, figures_not_rasterized) -> Path:
    out = tmp_path_factory.mktemp("serial")
    compare(CompareConfig(out=str(out), **TINY), progress=False)
    return out


def test_every_task_optimizer_remedy_seed_cell_runs_once(serial: Path) -> None:
    found = {(r["optimizer"], r["remedy"], r["seed"]) for r in rows(serial)}
    assert found == {(o, r, s) for o in ("adamw", "dopr-adamw") for r in TINY["remedies"] for s in ("0", "1")}
    assert sorted(p.relative_to(serial).parts[:2] for p in serial.glob("remedies/*/compare_config.json")) == \
        [("remedies", "dagger1"), ("remedies", "noise0.1")]
    assert len(list(serial.glob("runs/Reach-v0/*/seed*/eval.json"))) == 4  # none where it always was
    labels = {r["remedy"]: int(r["expert_labels"]) for r in rows(serial)}
    assert labels["dagger:1"] > labels["none"] == labels["noise:0.1"]
    # a DAgger cell's row: all its steps (8 + 1 round of 4) and its demonstrations, not the last round's
    assert {(r["remedy"], r["train_steps"], r["demo_episodes"]) for r in rows(serial)} == \
        {("none", "8", "2"), ("noise:0.1", "8", "2"), ("dagger:1", "12", "2")}


# A part of the serial grid: every remedy, for AdamW and seed 0 (a cell is a function of its own
# settings, so a grid of fewer optimizers and seeds runs the same cells).
PART = {**TINY, "optimizers": ["adamw"], "seeds": 1}


def part_of(out: Path) -> list[dict[str, str]]:
    return [r for r in rows(out) if r["seed"] == "0" and r["optimizer"] == "adamw"]


def test_workers_give_the_same_cells(serial: Path, tmp_path: Path) -> None:
    compare(CompareConfig(out=str(tmp_path), **PART), progress=False,
            execution=Execution("processes", workers=2, threads=1))
    assert rows(tmp_path) == part_of(serial)


def test_ray_gives_the_same_cells(serial: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason='compare --ray needs ray (pip install "dopr-robot[ray]")')
    compare(CompareConfig(out=str(tmp_path), **PART), progress=False, execution=Execution("ray", threads=1))
    assert rows(tmp_path) == part_of(serial)


def test_the_paired_rows_match_a_recomputation_from_results_csv(serial: Path) -> None:
    """The summary's validation-loss differences ([t]: per-seed means with 2 seeds) recomputed from the CSV."""
    table = rows(serial)
    value = {(r["optimizer"], r["remedy"], r["seed"]): float(r["val_loss"]) for r in table}
    summary = (serial / "summary.md").read_text().split("### validation loss")[1]
    for remedy in TINY["remedies"]:
        per_seed = [value["dopr-adamw", remedy, s] - value["adamw", remedy, s] for s in ("0", "1")]
        assert f"{np.mean(per_seed):+.3g}" in summary
    for remedy in ("noise:0.1", "dagger:1"):
        per_seed = [value["adamw", remedy, s] - value["adamw", "none", s] for s in ("0", "1")]
        line = next(line for line in summary.splitlines() if line.startswith("| adamw |") and "pairs" in line
                    and "seeds" not in line)
        assert f"{np.mean(per_seed):+.3g}" in line


def test_a_killed_grid_reruns_without_retraining_finished_cells_and_counts_their_time(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    config = CompareConfig(out=str(tmp_path), **{**TINY, "optimizers": ["adamw"], "seeds": 1,
                                                 "remedies": ["none", "dagger:1"]})
    real_train, trained, killed = train_module.train, [], []

    def dies_after_two(cell, *args, **kwargs):
        if len(trained) == 2:  # none's cell, then dagger:1's round 0; killed in its round 1
            killed.append(cell.out)
            raise KeyboardInterrupt
        trained.append(cell.out)
        return real_train(cell, *args, **kwargs)

    monkeypatch.setattr(train_module, "train", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        compare(config, progress=False)
    # The DAgger cell's finished round 0, made to have taken far longer than the whole test: the resumed
    # cell's time must count it, not only its last call's.
    done = next(tmp_path.glob("remedies/dagger1/runs/*/*/seed0/round_0/done.json"))
    done.write_text(json.dumps({**json.loads(done.read_text()), "wall_time_s": 1000.0}))
    trained.clear()
    monkeypatch.setattr(train_module, "train", lambda cell, *a, **k: trained.append(cell.out) or real_train(cell, *a, **k))
    compare(config, progress=False)
    assert trained == killed and killed[0].endswith("round_1/run")  # only the killed training runs again
    assert len(rows(tmp_path)) == 2
    cell = json.loads((done.parent.parent / "eval.json").read_text())["cell"]
    assert cell["resumed"] and 1000.0 <= cell["wall_time_s"] < 1100.0
    with open(tmp_path / "results.csv") as f:
        assert [float(r["wall_time_s"]) >= 1000.0 for r in csv.DictReader(f)] == [False, True]  # none, then dagger:1


def test_an_existing_comparison_resumes_unchanged(serial: Path, tmp_path: Path, monkeypatch) -> None:
    """A comparison made before remedies (no remedies key, runs in runs/) resumes without training."""
    old = tmp_path / "old"
    shutil.copytree(serial, old, ignore=shutil.ignore_patterns("remedies"))
    saved = json.loads((old / "compare_config.json").read_text())
    for key in ("remedies", "dagger_episodes", "dagger_steps", "dagger_beta0"):
        saved.pop(key)
    (old / "compare_config.json").write_text(json.dumps(saved))
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    result = compare(CompareConfig(out=str(old), **{**TINY, "remedies": ["none"]}), progress=False)
    assert len(result) == 4 and {r["remedy"] for r in result} == {"none"}


@pytest.mark.parametrize("remedies, message", [
    ("dagger:0", "'dagger:0' is not a remedy; allowed: none, noise:SIGMA (SIGMA > 0), dagger:ROUNDS (ROUNDS >= 1)"),
    ("noise:-1", "'noise:-1' is not a remedy; allowed"),
    ("none,bagging", "'bagging' is not a remedy; allowed"),
])
def test_bad_remedies_are_one_line_and_exit_2_before_any_work(tmp_path: Path, capsys, remedies: str, message: str) -> None:
    assert main([*ARGS, "--out", str(tmp_path / "out"), "--remedies", remedies]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_dagger_on_a_task_without_an_expert_is_refused_before_any_work(tmp_path: Path) -> None:
    config = CompareConfig(out=str(tmp_path / "out"), **{**TINY, "tasks": ["Ant-v5"]})
    with pytest.raises(UserError, match="DAgger needs Ant-v5's expert"):
        compare(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_overwrite_makes_a_dagger_cell_afresh(tmp_path: Path, monkeypatch) -> None:
    config = CompareConfig(out=str(tmp_path), **{**PART, "remedies": ["dagger:1"]})
    compare(config, progress=False)
    real_train, trained = train_module.train, []
    monkeypatch.setattr(train_module, "train", lambda cell, *a, **k: trained.append(cell.out) or real_train(cell, *a, **k))
    compare(config, progress=False, overwrite=True)
    assert [Path(out).parent.name for out in trained] == ["round_0", "round_1"]  # no round kept from before


def test_remedies_may_grow_but_a_remedys_runs_keep_their_settings(serial: Path, tmp_path: Path) -> None:
    from dopr_robot.compare import check_comparison

    grown = tmp_path / "grown"
    shutil.copytree(serial, grown, ignore=shutil.ignore_patterns("remedies"))
    check_comparison(CompareConfig(out=str(grown), **{**TINY, "dagger_steps": 7}))  # dagger:1 is new there: any settings
    with pytest.raises(UserError, match=r"changed: dagger_steps \(4 -> 7\)"):  # its runs in remedies/dagger1 took 4
        check_comparison(CompareConfig(out=str(serial), **{**TINY, "dagger_steps": 7}))
    with pytest.raises(UserError, match=r"remedies \(\['none', 'noise:0.1', 'dagger:1'\] -> \['noise:0.1'\]: the runs in"):
        check_comparison(CompareConfig(out=str(serial), **{**TINY, "remedies": ["noise:0.1"]}))
