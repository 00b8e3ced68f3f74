"""The paper's Humanoid-v5 experiment as one command: experiments/humanoid_v5.json parses into the
grid it promises, a tiny version of it runs end to end (Hopper-v5, whose expert ships), per-optimizer
settings reach every cell and the report, several demonstration counts keep one comparison each,
and `dopr-robot sweep` chooses each lr by return and gives DoPr-X only the damping to tune."""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import envs
from envs.experts import sb3 as sb3_weights
from dopr_robot.cli import main
from dopr_robot.collect_config import CollectConfig
from dopr_robot.commands import compare as compare_command
from dopr_robot.compare import CompareConfig, compare, load_compare_config, resolve_compare_config, train_template
from dopr_robot.config import EvalConfig
from dopr_robot.errors import UserError
from dopr_robot.sweep import TUNING_FIRST_SEED, SweepConfig
from envs import seeds

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "humanoid_v5.json"
CPU_EXPERIMENT = ROOT / "experiments" / "humanoid_v5_cpu.json"
PAPER_OPTIMIZERS = ["adamw", "dopr-adamw", "muon", "dopr-muon", "signum", "dopr-signum", "adamuon", "dopr-adamuon"]
# The experiment made tiny: Hopper-v5 (its expert ships), 2 seeds, 2 demonstration counts, 2 optimizers,
# a few steps of a tiny MLP, 2 evaluation episodes without the expert's own rollouts beside them (its
# episodes run to the time limit, the untrained policy's fall within steps; test_compare.py checks them).
TINY_GRID = ["--tasks", "Hopper-v5", "--seeds", "2", "--demo-episodes", "2,3", "--steps", "12", "--batch-size", "32",
             "--policy-options", '{"width": 16, "depth": 1}', "--eval-episodes", "2", "--eval-num-envs", "2",
             "--eval-no-expert", "--no-progress"]
TINY = [*TINY_GRID, "--optimizers", "adamw,dopr-adamw"]  # the sweep chooses its optimizers itself (--bases)
HUMANOID_READY = envs.task_spec("Humanoid-v5").available


def experiment_config(*args: str) -> CompareConfig:
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    return resolve_compare_config(parser.parse_args(["--config", str(EXPERIMENT), "--out", "o", *args]))


def test_the_experiment_file_is_the_papers_grid() -> None:
    config = experiment_config()
    assert config.tasks == ["Humanoid-v5"] and config.train.policy == "mlp"
    assert config.optimizers == PAPER_OPTIMIZERS
    assert config.demo.episodes == [10, 25, 50] and config.seeds >= 5
    assert config.train.ema_decay > 0 and config.eval.use_ema  # EMA weights are what is evaluated
    assert set(config.optimizer_settings) == set(PAPER_OPTIMIZERS)
    for name, settings in config.optimizer_settings.items():
        assert set(settings) == ({"lr", "weight_decay", "damping"} if name.startswith("dopr-") else {"lr", "weight_decay"})
    evaluation = range(config.eval.seed, config.eval.seed + config.eval.episodes)
    demonstrations = range(config.demo.seed, config.demo.seed + max(config.demo.episodes))
    assert evaluation.start == seeds.POLICY_EVAL
    for other in (seeds.ranges()["tuning"], demonstrations):
        assert not set(evaluation) & set(other)
    assert [c.demo.episodes for c in config.by_demo_count().values()] == [10, 25, 50]


def test_the_cpu_experiment_runs_the_settings_its_committed_sweep_chose() -> None:
    """humanoid_v5_cpu.json is the paper's grid made smaller, and its settings are the "Chosen" table of
    humanoid_v5_cpu_sweep.md (a rerun sweep must update both together)."""
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    config = resolve_compare_config(parser.parse_args(["--config", str(CPU_EXPERIMENT), "--out", "o"]))
    assert config.tasks == ["Humanoid-v5"] and config.optimizers == PAPER_OPTIMIZERS and config.seeds >= 5
    assert config.eval.use_ema and config.eval.seed == seeds.POLICY_EVAL
    table = CPU_EXPERIMENT.with_name("humanoid_v5_cpu_sweep.md").read_text().split("## Chosen")[1]
    chosen = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in PAPER_OPTIMIZERS:
            chosen[cells[0]] = {"lr": float(cells[1]), "weight_decay": float(cells[2]),
                                **({} if cells[3] == "—" else {"damping": float(cells[3])})}
    assert config.optimizer_settings == chosen


@pytest.mark.parametrize("command", [["compare"], ["sweep", "--demo-episodes", "25"]])
def test_without_the_humanoid_expert_both_commands_say_what_to_do_before_any_work(tmp_path: Path, capsys, command,
                                                                                   monkeypatch) -> None:
    monkeypatch.setattr(sb3_weights, "WEIGHTS_ROOT", tmp_path / "no-weights")  # as on a checkout without them
    out = tmp_path / "humanoid"
    assert main([*command, "--config", str(EXPERIMENT), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dopr-robot {command[0]}: error: task Humanoid-v5 is unavailable: no expert weights yet")
    assert "dopr-robot expert train --task Humanoid-v5" in err and "dopr-robot expert export --run RUN" in err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.skipif(not HUMANOID_READY, reason="no Humanoid-v5 expert (envs/experts/weights/Humanoid-v5/)")
def test_the_experiment_file_itself_runs_tiny_on_humanoid(tmp_path: Path, capsys) -> None:
    """The committed file as it is, on its own task, made tiny: 2 demonstrations, 2 optimizers, 2 seeds,
    a few steps of a tiny MLP, 2 evaluation episodes (a policy this untrained falls within steps) without
    the expert's rollouts beside them (they run to the time limit)."""
    out = tmp_path / "humanoid"
    assert main(["compare", "--config", str(EXPERIMENT), "--out", str(out), "--optimizers", "adamw,dopr-adamw",
                 "--seeds", "2", "--demo-episodes", "2", "--steps", "12", "--batch-size", "32", "--warmup-steps", "2",
                 "--policy-options", '{"width": 16, "depth": 1}', "--eval-episodes", "2", "--eval-num-envs", "2",
                 "--eval-no-expert", "--no-progress"]) == 0
    capsys.readouterr()
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["task"], r["optimizer"], r["seed"]) for r in rows) == [
        ("Humanoid-v5", optimizer, seed) for optimizer in ("adamw", "dopr-adamw") for seed in ("0", "1")]
    for name in ("summary.md", "terminal_reward.png", "val_loss_vs_return.png", "data/Humanoid-v5.hdf5"):
        assert (out / name).exists(), name
    run = json.loads((out / "runs" / "Humanoid-v5" / "dopr-adamw" / "seed1" / "config.json").read_text())
    assert run["ema_decay"] == 0.995 and run["grad_clip"] == 1.0 and run["policy"] == "mlp"


def test_a_tiny_experiment_runs_end_to_end_one_comparison_per_count(tmp_path: Path, capsys, train_calls: list,
                                                                    file_contents, monkeypatch) -> None:
    settings = tmp_path / "optimizer_settings.json"  # what a sweep writes
    settings.write_text(json.dumps({"adamw": {"lr": 0.002, "weight_decay": 0.0},
                                    "dopr-adamw": {"lr": 0.003, "weight_decay": 0.01, "damping": 0.05}}))
    out = tmp_path / "exp"
    args = ["compare", "--config", str(EXPERIMENT), "--out", str(out), "--optimizer-settings", str(settings), *TINY]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for count in (2, 3):
        grid = out / f"demos{count}"
        assert load_compare_config(grid).demo.episodes == count
        for name in ("results.csv", "summary.md", "terminal_reward.png", "val_loss_vs_return.png", "data/Hopper-v5.hdf5"):
            assert (grid / name).exists(), name
        for optimizer, lr, weight_decay in (("adamw", 0.002, 0.0), ("dopr-adamw", 0.003, 0.01)):
            for seed in (0, 1):
                run = json.loads((grid / "runs" / "Hopper-v5" / optimizer / f"seed{seed}" / "config.json").read_text())
                assert (run["optimizer"], run["lr"], run["weight_decay"], run["steps"]) == (optimizer, lr, weight_decay, 12)
                assert run["policy_options"] == {"width": 16, "depth": 1}
                if optimizer == "dopr-adamw":
                    assert run["damping"] == 0.05
        summary = (grid / "summary.md").read_text()
        assert "lr per optimizer: adamw 0.002, dopr-adamw 0.003" in summary
        assert "weight decay per optimizer: adamw 0, dopr-adamw 0.01" in summary and "DoPr damping 0.05" in summary
        assert "runs disagree" not in summary
    top = (out / "summary.md").read_text()
    assert str(out / "summary.md") in printed and "| | 2 demos | 3 demos |" in top  # printed fitted, in full in the file
    assert top.count("| dopr-adamw - adamw | ") == 3  # return, success, validation loss, at each count
    assert "[2 demos](demos2/summary.md)" in top
    results = (out / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 2 * 2 * 2  # every run of every count
    for figure in ("terminal_reward.png", "val_loss_vs_return.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "compare_config.json").read_text())["demo"]["episodes"] == [2, 3]

    # Resumable: the same command trains nothing; a changed per-optimizer setting is refused like any other.
    # (The figures were checked above: from here they are built but not drawn again.)
    import matplotlib.pyplot as plt

    import dopr_robot.report.plots as plots

    monkeypatch.setattr(plots, "_save", lambda fig, path: plt.close(fig))
    checkpoint = out / "demos2" / "runs" / "Hopper-v5" / "adamw" / "seed0" / "checkpoint.pt"
    runs = sorted(out.glob("demos*/runs/*/*/seed*/*"))
    before = file_contents(runs)
    assert checkpoint in before and sum(p.name == "checkpoint.pt" for p in before) == 2 * 2 * 2  # every run's files
    assert len(train_calls) == 8  # the spy sees the cells train (so it would see them train again)
    train_calls.clear()
    assert main(args) == 0
    assert file_contents(runs) == before and train_calls == []
    capsys.readouterr()
    changed = json.loads(settings.read_text())
    changed["dopr-adamw"]["damping"] = 0.2
    settings.write_text(json.dumps(changed))
    assert main(args) == 2
    assert ("holds a comparison made with other settings (changed: optimizer_settings.dopr-adamw.damping (0.05 -> 0.2))"
            in capsys.readouterr().err)


def test_the_sweep_picks_each_lr_by_return_and_dopr_inherits_it_sweeping_only_the_damping(
        tmp_path: Path, capsys, train_calls: list, file_contents, figures_not_rasterized_in_test) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(EXPERIMENT), "--out", str(out), *TINY_GRID, "--demo-episodes", "3",
                 "--bases", "adamw", "--lrs", "0.0003,0.01", "--weight-decays", "0", "--dampings", "0.01,0.3"]) == 0
    printed = capsys.readouterr().out
    mean_return = {}
    for lr in (0.0003, 0.01):
        grid = out / "adamw" / f"lr{lr:g}_wd0"
        per_run = []
        for seed in (TUNING_FIRST_SEED, TUNING_FIRST_SEED + 1):  # training seeds of its own
            result = json.loads((grid / "runs" / "Hopper-v5" / "adamw" / f"seed{seed}" / "eval.json").read_text())
            assert result["seed"] == seeds.TUNING  # the tuning reset seeds, not the experiment's
            assert json.loads((grid / "runs" / "Hopper-v5" / "adamw" / f"seed{seed}" / "config.json").read_text())["lr"] == lr
            per_run.append(np.mean([episode["return"] for episode in result["records"]]))
        mean_return[lr] = np.mean(per_run)
    best = max(mean_return, key=mean_return.get)
    assert mean_return[0.0003] != mean_return[0.01]  # the choice is not a tie here
    chosen = json.loads((out / "optimizer_settings.json").read_text())
    assert set(chosen) == {"adamw", "dopr-adamw"}
    assert chosen["adamw"] == {"lr": best, "weight_decay": 0.0}
    assert {key: chosen["dopr-adamw"][key] for key in ("lr", "weight_decay")} == chosen["adamw"]  # inherited
    assert chosen["dopr-adamw"]["damping"] in (0.01, 0.3)
    for damping in (0.01, 0.3):  # only the damping was swept, at adamw's choice
        run = out / "dopr-adamw" / f"lr{best:g}_wd0_damping{damping:g}" / "runs" / "Hopper-v5" / "dopr-adamw" / "seed100"
        saved = json.loads((run / "config.json").read_text())
        assert (saved["lr"], saved["weight_decay"], saved["damping"]) == (best, 0.0, damping)
    assert sorted(p.name for p in (out / "dopr-adamw").iterdir()) == [f"lr{best:g}_wd0_damping0.01", f"lr{best:g}_wd0_damping0.3"]
    report = (out / "sweep.md").read_text()
    assert str(out / "sweep.md") in printed and report.count("**chosen**") == 2 and "2,000,000–2,000,001" in report
    # two values tried: either choice is an edge of its range, and the report and the terminal say so
    side = "largest" if chosen["dopr-adamw"]["damping"] == 0.3 else "smallest"
    note = f"dopr-adamw: damping {chosen['dopr-adamw']['damping']:g} is the {side} value tried that trained"
    assert note in report and note in printed and f"adamw: lr {best:g} is the" in report
    # compare takes the sweep's file as it is
    config = experiment_config("--optimizer-settings", str(out / "optimizer_settings.json"), "--tasks", "Hopper-v5")
    assert config.cell_config("dopr-adamw", 0, Path(""), Path("")).damping == chosen["dopr-adamw"]["damping"]

    # Moved elsewhere, the sweep resumes there: every setting is found finished (nothing trains) and chosen alike.
    moved = tmp_path / "moved"
    out.rename(moved)
    runs = sorted(moved.glob("*/*/runs/*/*/seed*/*"))
    before = file_contents(runs)
    assert len(train_calls) == 8  # the spy sees the cells train (so it would see them train again)
    train_calls.clear()
    assert main(["sweep", "--config", str(EXPERIMENT), "--out", str(moved), *TINY_GRID, "--demo-episodes", "3",
                 "--bases", "adamw", "--lrs", "0.0003,0.01", "--weight-decays", "0", "--dampings", "0.01,0.3"]) == 0
    assert sum(p.name == "checkpoint.pt" for p in before) == 8 and file_contents(runs) == before and train_calls == []
    assert json.loads((moved / "optimizer_settings.json").read_text()) == chosen


@pytest.mark.parametrize("settings, message", [
    ({"lion": {"lr": 0.1}}, r"optimizer_settings names unknown optimizer\(s\) lion; valid: sgd"),
    ({"adamw": {"steps": 10, "lrr": 0.1}}, r"optimizer_settings.adamw sets steps, lrr, which cannot differ between "
                                           r"optimizers; per-optimizer settings: lr, weight_decay, damping"),
    ({"adamw": {"damping": 0.1}}, r"optimizer_settings.adamw sets damping, which only dopr-\* optimizers use"),
    ({"muon": {"optimizer_options": {"refresh_every": 2}}}, r"optimizer_settings.muon sets refresh_every, which only"),
    ({"adamw": {"lr": "fast"}}, r"optimizer_settings.adamw.lr must be a number, got 'fast'"),
    ({"adamw": 0.1}, r"optimizer_settings.adamw must be a JSON object of settings"),
    ({"dopr-adamw": {"lr": -1.0}}, r"optimizer_settings.dopr-adamw.lr must be >= 0, got -1.0"),
    ({"dopr-adamw": {"optimizer_options": {"refresh_every": 0}}}, r"optimizer_settings.dopr-adamw.optimizer_options"),
])
def test_bad_optimizer_settings_are_one_clear_error(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        CompareConfig(out="o", tasks=["Reach-v0"], optimizers=["adamw", "dopr-adamw"], optimizer_settings=settings)


def test_optimizer_settings_override_the_template_for_their_optimizer_only() -> None:
    config = CompareConfig(out="o", optimizers=["adamw", "dopr-adamw"],
                           train=train_template(lr=1e-3, optimizer_options={"refresh_every": 4}),
                           optimizer_settings={"dopr-adamw": {"lr": 3e-3, "optimizer_options": {"cov_ema": 0.9}},
                                               "muon": {"lr": 0.02}})  # not in the grid: checked, unused
    adamw, dopr = (config.cell_config(name, 0, Path("d"), Path("o")) for name in ("adamw", "dopr-adamw"))
    assert (adamw.lr, adamw.optimizer_options) == (1e-3, {"refresh_every": 4})
    assert (dopr.lr, dopr.optimizer_options) == (3e-3, {"refresh_every": 4, "cov_ema": 0.9})  # merged


@pytest.mark.parametrize("overrides, message", [
    # In Python the fields are named: the CollectConfig's own, or the comparison's (--demo-episodes on the command line).
    (dict(demo=dict(episodes=[10, 10])), r"^episodes lists a count twice"),
    (dict(demo=dict(episodes=[10, 0])), r"^episodes must be a count >= 1 or a list of them, got \[10, 0\]"),
    (dict(demo=dict(episodes=[])), r"^episodes must be a count >= 1"),
    (dict(demo=dict(episodes=[10, 25]), data={"Reach-v0": "x.hdf5"}), r"^data gives the demonstrations, so it cannot "
                                                                       r"be used with several demo.episodes \(10, 25\)"),
    (dict(demo=dict(episodes=[10, 20_000])), r"demo.episodes 20000 collects from reset seeds 0..19,999, outside"),
    (dict(first_seed=-1), r"^first_seed must be >= 0"),
])
def test_demo_count_errors(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        if "demo" in overrides:
            overrides = {**overrides, "demo": CollectConfig(**overrides["demo"])}
        CompareConfig(out="o", tasks=["Reach-v0"], **overrides)


def test_demo_episodes_on_the_command_line_is_a_count_or_a_list(tmp_path: Path, capsys) -> None:
    assert experiment_config("--demo-episodes", "50").demo.episodes == 50
    assert experiment_config("--demo-episodes", "5,15").demo.episodes == [5, 15]
    for counts, message in (("10,10", "--demo-episodes lists a count twice: [10, 10]"),
                            ("10,0", "--demo-episodes must be a count >= 1 or a list of them, got [10, 0]")):
        assert main(["compare", "--out", str(tmp_path / "x"), "--demo-episodes", counts]) == 2
        assert capsys.readouterr().err == f"dopr-robot compare: error: {message}\n"
    with pytest.raises(SystemExit):  # argparse's own usage error
        main(["compare", "--out", str(tmp_path / "x"), "--demo-episodes", "ten"])
    assert "expected a count like 50 or counts separated by commas like 10,25,50, got 'ten'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"demo_episodes": "10"}))
    assert main(["compare", "--out", str(tmp_path / "x"), "--config", str(bad)]) == 2
    assert "demo.episodes must be an integer or a JSON list, got '10'" in capsys.readouterr().err


def test_one_demo_count_keeps_the_layout_and_an_older_grid_resumes(tmp_path: Path, monkeypatch) -> None:
    config = CompareConfig(out=str(tmp_path), tasks=["Reach-v0"], optimizers=["adamw"], seeds=1,
                           demo=CollectConfig(episodes=3),
                           train=train_template(steps=6, batch_size=16, policy_options={"width": 8, "depth": 1}),
                           eval=EvalConfig(episodes=2, num_envs=2))
    compare(config, progress=False)
    assert (tmp_path / "runs" / "Reach-v0" / "adamw" / "seed0" / "eval.json").exists()
    assert (tmp_path / "data" / "Reach-v0.hdf5").exists() and not list(tmp_path.glob("demos*"))
    saved = json.loads((tmp_path / "compare_config.json").read_text())
    assert saved["demo"]["episodes"] == 3
    # A grid saved before optimizer_settings and first_seed existed resumes as the same grid, training nothing.
    del saved["optimizer_settings"], saved["first_seed"]
    (tmp_path / "compare_config.json").write_text(json.dumps(saved))
    import dopr_robot.train as train_module

    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    assert len(compare(config, progress=False)) == 1
    # ... and cannot turn into a grid over counts in the same directory.
    with pytest.raises(UserError, match=r"changed: demo.episodes \(3 -> \[3, 5\]\)"):
        compare(replace(config, demo=replace(config.demo, episodes=[3, 5])), progress=False)


def test_replicate_asks_for_one_count_at_a_time(tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid"
    out.mkdir()
    config = experiment_config("--tasks", "Reach-v0")
    from dopr_robot.config import config_to_dict

    (out / "compare_config.json").write_text(json.dumps(config_to_dict(replace(config, out=str(out)))))
    assert main(["compare", "--out", str(out), "--replicate"]) == 2
    assert f"replicate them one by one: `dopr-robot compare --out {out / 'demos10'} --replicate`" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--demo-episodes", "10,25"], "the sweep tunes on one demonstration count, the grid lists 10, 25: give one"),
    (["--bases", "dopr-adamw"], "--bases dopr-adamw: not a base optimizer with a DoPr variant; valid: sgd, adam, adamw"),
    (["--lrs", "0.1,0.1"], "--lrs lists a value twice"),
    (["--dampings", "-1"], "--dampings must be numbers >= 0"),
    (["--eval-seed", "5000"], "the sweep evaluates on the tuning seeds 2,000,000..2,999,999"),
])
def test_sweep_refusals(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--tasks", "Reach-v0", "--demo-episodes", "5", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_a_choice_at_the_edge_of_its_range_is_flagged_and_one_inside_is_not() -> None:
    from dopr_robot.sweep import Outcome, edge_notes

    def tried(name: str, key: str, options: tuple[float, ...], failed: float | None = None) -> list[Outcome]:
        base = {"lr": 1e-3, "weight_decay": 0.0} | ({"damping": 1.0} if name.startswith("dopr") else {})
        return [Outcome(name, {**base, key: v}, Path("."), {}, error="diverged" if v == failed else "") for v in options]

    outcomes = {"adamw": tried("adamw", "lr", (1e-4, 1e-3, 1e-2)),
                "muon": tried("muon", "lr", (1e-3, 1e-2, 1e-1), failed=1e-1),
                "dopr-adamw": tried("dopr-adamw", "damping", (0.1, 1.0, 10.0)),
                "dopr-muon": tried("dopr-muon", "damping", (0.1, 1.0))}
    chosen = {"adamw": {"lr": 1e-3, "weight_decay": 0.0}, "muon": {"lr": 1e-2, "weight_decay": 0.0},
              "dopr-adamw": {"lr": 1e-3, "weight_decay": 0.0, "damping": 1.0},
              "dopr-muon": {"lr": 1e-3, "weight_decay": 0.0, "damping": 0.1}}
    # adamw's lr and dopr-adamw's damping lie inside their ranges, and weight decay 0 cannot go lower;
    # muon's 1e-2 is the largest that trained (1e-1 failed), dopr-muon's 0.1 the smallest damping tried
    assert edge_notes(outcomes, chosen) == [
        "muon: lr 0.01 is the largest value tried that trained, so the best may lie beyond it (add values to --lrs).",
        "dopr-muon: damping 0.1 is the smallest value tried that trained, so the best may lie beyond it "
        "(add values to --dampings)."]


def test_sweep_bases_default_to_the_grids_and_its_eval_seeds_move_to_tuning() -> None:
    grid = experiment_config()
    config = SweepConfig(grid=replace(grid, demo=replace(grid.demo, episodes=25)))
    assert config.bases == ["adamw", "muon", "signum", "adamuon"]
    setting = config.setting("dopr-muon", 0.02, 0.1, 0.3)
    assert setting.eval.seed == seeds.TUNING and setting.first_seed == TUNING_FIRST_SEED
    assert setting.optimizers == ["dopr-muon"] and setting.optimizer_settings == {}
    assert (setting.train.lr, setting.train.weight_decay, setting.train.damping) == (0.02, 0.1, 0.3)
    assert setting.data == {"Humanoid-v5": str(Path("o") / "data" / "Humanoid-v5.hdf5")}
    assert setting.train.policy_options == {"width": 512, "depth": 4}  # the experiment's training template


def test_a_failed_setting_is_listed_and_skipped_and_ties_go_to_success(tmp_path: Path, monkeypatch) -> None:
    import dopr_robot.sweep as sweep_module
    from dopr_robot.grid import CellsFailed

    # lr -> (return, success) of every episode; lr 1 diverges; 0.01 and 0.1 tie on return, 0.1 succeeds more.
    outcome = {0.001: (5.0, 0.0), 0.01: (9.0, 0.2), 0.1: (9.0, 0.6), 1.0: None}

    def fake_compare(grid, **_):
        if grid.optimizers == ["adamw"] and outcome[grid.train.lr] is None:
            raise CellsFailed("the training loss became non-finite (nan or inf) at step 3; ...", [])
        value, success = outcome[grid.train.lr] if grid.optimizers == ["adamw"] else (grid.train.damping, 0.0)
        records = [{"seed": seeds.TUNING + i, "return": value, "success": success} for i in range(2)]
        return [{"task": "Reach-v0", "seed": s, "_records": records, "val_loss": 0.1, "mean_return": value,
                 "success_rate": success} for s in (100, 101)]

    monkeypatch.setattr(sweep_module, "compare", fake_compare)
    monkeypatch.setattr(sweep_module, "demonstrations", lambda *a, **k: None)
    config = SweepConfig(grid=CompareConfig(out=str(tmp_path), tasks=["Reach-v0"], seeds=2), bases=["adamw"],
                         lrs=[0.001, 0.01, 0.1, 1.0], dampings=[0.3, 0.03])
    chosen = sweep_module.sweep(config, progress=False)
    assert chosen == {"adamw": {"lr": 0.1, "weight_decay": 0.0}, "dopr-adamw": {"lr": 0.1, "weight_decay": 0.0, "damping": 0.3}}
    report = (tmp_path / "sweep.md").read_text()
    assert "| 1 | 0 | failed: the training loss became non-finite (nan or inf) at step 3; ... |" in report
    assert json.loads((tmp_path / "optimizer_settings.json").read_text()) == chosen


# The robomimic experiments (pixels, flow-unet): the files name existing options; the full grid is
# checked once the tasks are registered (robosuite).
ROBOMIMIC = {"robomimic_tool_hang.json": ("ToolHang", ["sideview", "robot0_eye_in_hand"], 1),
             "robomimic_transport.json": ("TwoArmTransport", ["shouldercamera0", "shouldercamera1", "robot0_eye_in_hand",
                                                              "robot1_eye_in_hand"], 2)}


@pytest.mark.parametrize("name", ROBOMIMIC)
def test_the_robomimic_experiment_files_name_existing_options(name: str) -> None:
    from dopr_robot.config import check_config_dict
    from dopr_robot.optim import OPTIMIZERS
    from policies import check_policy_shape

    task, cameras, robots = ROBOMIMIC[name]
    path = ROOT / "experiments" / name
    values = json.loads(path.read_text())
    check_config_dict(CompareConfig, values, where=str(path))  # every key an option, every value its type
    assert values["tasks"] == [task] and values["optimizers"] == ["adamw", "dopr-adamw", "muon", "dopr-muon"]
    assert set(values["optimizer_settings"]) <= set(OPTIMIZERS)
    template = train_template(**values["train"])  # the policy options checked by the policy's config
    assert template.policy == "flow-unet" and (template.history, template.chunk) == (2, 16)
    check_policy_shape(template.policy, template.history, template.chunk, **template.policy_options)
    assert template.policy_options["encoder"] == "resnet18" and template.ema_decay > 0 and template.eval_every > 0
    low_dim = [f"robot{i}_{key}" for i in range(robots) for key in ("eef_pos", "eef_quat", "gripper_qpos")]
    assert template.obs_keys == low_dim + [f"{camera}_image" for camera in cameras]
    evaluation = EvalConfig(**values["eval"])
    assert evaluation.actions_per_chunk == 8 and evaluation.use_ema and evaluation.seed == seeds.POLICY_EVAL
    if task in envs.list_tasks():  # the whole grid, with its dataset given as the README says
        parser = argparse.ArgumentParser()
        compare_command.add_arguments(parser)
        config = resolve_compare_config(parser.parse_args(["--config", str(path), "--out", "o", "--data",
                                                           json.dumps({task: "image.hdf5"})]))
        assert config.train.policy_options == template.policy_options


@pytest.mark.parametrize("name, camera", [("recipe_cpu_reach_pixels.json", "agentview"),
                                          ("recipe_cpu_mw_pixels.json", "topview")])
def test_the_cpu_recipe_files_run_the_robomimic_recipe_at_cpu_scale(name: str, camera: str) -> None:
    """experiments/recipe_cpu_*_pixels.json: the robomimic files' recipe (flow-unet over an encoder per
    camera, history 2, chunk 16 executing 8, EMA, best-checkpoint evaluation, AdamW and Muon with their DoPr
    variants) on a task here from pixels, at a size a CPU trains (the small conv encoder, the default U-Net)."""
    from dopr_robot.config import check_config_dict
    from policies import check_policy_shape

    path = ROOT / "experiments" / name
    values = json.loads(path.read_text())
    check_config_dict(CompareConfig, values, where=str(path))
    paper = json.loads((ROOT / "experiments" / "robomimic_tool_hang.json").read_text())
    assert values["optimizers"] == paper["optimizers"] and values["seeds"] >= 5
    template = train_template(**values["train"])
    assert (template.policy, template.history, template.chunk) == ("flow-unet", 2, 16)
    check_policy_shape(template.policy, template.history, template.chunk, **template.policy_options)
    assert template.policy_options["encoder"] == "conv" and f"{camera}_image" in template.obs_keys
    assert camera in envs.task_spec(values["tasks"][0]).cameras
    if "data" not in values:  # compare collects the demonstrations: with the camera the policy reads
        assert camera in values["demo"]["cameras"]
    assert template.ema_decay > 0 and 0 < template.eval_every < template.steps
    evaluation = EvalConfig(**values["eval"])
    assert evaluation.actions_per_chunk == 8 and evaluation.use_ema and evaluation.seed == seeds.POLICY_EVAL
