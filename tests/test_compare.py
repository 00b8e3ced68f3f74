"""The comparison harness: a tiny grid end to end, agreement of its outputs, resuming after a kill,
the training template (every `train` option is a `compare` option), --demo-seed and --replicate."""

from __future__ import annotations

import csv
import json
from dataclasses import MISSING, fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import demos
import dopr_robot.compare as compare_module
from dopr_robot.cli import main
from dopr_robot.collect_config import CollectConfig
from dopr_robot.compare import PER_CELL, CompareConfig, compare, load_compare_config, train_template
from dopr_robot.config import EvalConfig, TrainConfig, config_to_dict
from dopr_robot.errors import UserError
from envs.seeds import POLICY_EVAL, REPLICATION, REPLICATION_DEMO_SEED

TINY = dict(tasks=["Reach-v0"], optimizers=["adamw", "dopr-adamw"], seeds=2, demo=CollectConfig(episodes=4),
            train=train_template(steps=20, batch_size=32, policy_options={"width": 16, "depth": 1}),
            eval=EvalConfig(episodes=3, num_envs=3))
# The same on the command line, one seed and fewer steps.
TINY_ARGS = ["--tasks", "Reach-v0", "--optimizers", "adamw,dopr-adamw", "--seeds", "1", "--demo-episodes", "3",
             "--steps", "6", "--batch-size", "16", "--policy-options", '{"width": 16, "depth": 1}',
             "--eval-episodes", "2", "--eval-num-envs", "2", "--no-progress"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_grid_writes_agreeing_csv_summary_and_plots(tmp_path: Path) -> None:
    rows = compare(CompareConfig(out=str(tmp_path), **TINY), progress=False)
    assert [(r["optimizer"], r["seed"]) for r in rows] == [("adamw", 0), ("adamw", 1), ("dopr-adamw", 0), ("dopr-adamw", 1)]
    table = read_csv(tmp_path / "results.csv")
    assert len(table) == 4 and {"val_loss", "success_rate", "mean_return", "j_traj", "wall_time_s"} <= set(table[0])
    for row, line in zip(rows, table):
        eval_json = json.loads((tmp_path / "runs" / "Reach-v0" / row["optimizer"] / f"seed{row['seed']}" / "eval.json").read_text())
        assert float(line["success_rate"]) == eval_json["closed_loop"]["success_rate"]
        assert float(line["val_loss"]) == eval_json["validation"]["val_loss"]
        assert int(line["eval_episodes"]) == 3
        # evaluated with the expert (the default): the compounding error and the expert's fields are there
        assert eval_json["compounding"] is not None and float(line["j_traj"]) == eval_json["compounding"]["j_traj"]["mean"]
        assert all({"j_traj", "expert_return", "time_to_divergence"} <= set(r) for r in eval_json["records"])

    summary = (tmp_path / "summary.md").read_text()  # its statistics are tests/test_report.py's business
    for optimizer in ("adamw", "dopr-adamw"):
        assert f"| {optimizer} | 2 | " in summary
    assert "| dopr-adamw - adamw | 2 | 3 |" in summary
    for plot in ("val_loss_vs_success.png", "deviation_from_expert.png", "learning_curves.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Killed(Exception):
    pass


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_killed_compare_resumes_and_skips_finished_cells_even_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   train_calls: list, file_contents) -> None:
    config = CompareConfig(out=str(tmp_path / "made"), **TINY)
    real_evaluate = compare_module.evaluate_checkpoint
    calls = []

    def evaluate_then_die(run_dir, *args, **kwargs):
        calls.append(Path(run_dir))
        if len(calls) == 3:
            raise Killed  # dies after training cell 3, before its evaluation is written
        return real_evaluate(run_dir, *args, **kwargs)

    monkeypatch.setattr(compare_module, "evaluate_checkpoint", evaluate_then_die)
    with pytest.raises(Killed):
        compare(config, progress=False)
    # Moved (with the demonstrations it collected inside it), the grid resumes where it lies now.
    (tmp_path / "made").rename(tmp_path / "moved")
    config = replace(config, out=str(tmp_path / "moved"))
    finished = sorted((tmp_path / "moved").glob("runs/*/*/seed*/eval.json"))
    assert len(finished) == 2
    first_written = file_contents(finished)

    monkeypatch.setattr(compare_module, "evaluate_checkpoint", real_evaluate)
    train_calls.clear()
    rows = compare(config, progress=False)
    assert len(rows) == 4
    assert file_contents(finished) == first_written  # finished cells untouched
    # Cell 3 had its final checkpoint: it resumes (no steps left) and is evaluated; cell 4 trains anew.
    assert train_calls == [("dopr-adamw", 0, True), ("dopr-adamw", 1, False)]


def test_a_resumed_cell_reports_the_training_time_its_checkpoint_carried(tmp_path: Path, reach_demos: Path) -> None:
    config = CompareConfig(out=str(tmp_path), **{**TINY, "seeds": 1, "eval": EvalConfig(episodes=1, num_envs=1)})
    run_dir = config.run_dir("Reach-v0", "adamw", 0)
    compare_module.run_cell(config, "Reach-v0", "adamw", 0, reach_demos, device="cpu")
    assert json.loads((run_dir / "eval.json").read_text())["cell"]["resumed"] is False
    # Killed before its evaluation after 1000 s of training: the rerun resumes (no steps left) and counts them.
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**checkpoint, "elapsed_s": 1000.0}, run_dir / "checkpoint.pt")
    (run_dir / "eval.json").unlink()
    compare_module.run_cell(config, "Reach-v0", "adamw", 0, reach_demos, device="cpu")
    cell = json.loads((run_dir / "eval.json").read_text())["cell"]
    assert cell["resumed"] is True and cell["wall_time_s"] >= 1000.0


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    config = CompareConfig(out=str(tmp_path), **{**TINY, "optimizers": ["adamw"], "seeds": 1})
    compare(config, progress=False)
    with pytest.raises(UserError, match=r"holds a comparison made with other settings \(changed: train\.lr \(0\.001 -> 0\.5\)\)"):
        compare(replace(config, train=replace(config.train, lr=0.5)), progress=False)
    with pytest.raises(UserError, match=r"\(changed: eval\.episodes \(3 -> 4\)\)"):
        compare(replace(config, eval=replace(config.eval, episodes=4)), progress=False)
    rows = compare(replace(config, seeds=2, eval=replace(config.eval, num_envs=1)), progress=False)  # growing is fine
    assert len(rows) == 2
    assert load_compare_config(tmp_path) == replace(config, seeds=2, eval=replace(config.eval, num_envs=1))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(optimizers=["adamw", "lion"]), r"unknown optimizer\(s\) lion"),
        (dict(tasks=["Nope-v0"]), r"unknown task\(s\) Nope-v0; valid: Reach-v0"),
        (dict(seeds=0), r"^seeds must be >= 1"),  # in Python the fields are named (flags on the command line)
        (dict(data={"Push-v0": "x.hdf5"}), r"^data names task\(s\) Push-v0 that are not in tasks"),
        (dict(train=TrainConfig(data="x.hdf5", out="", seed=3)), r"the training template sets data='x.hdf5', seed=3, "
                                                                   r"which compare sets for each cell"),
        (dict(train=train_template(optimizer_options={"refresh_every": 0})),
         r'^train.optimizer_options \{"refresh_every": 0\} with optimizers dopr-adamw: Invalid refresh_every: 0'),
        (dict(demo=CollectConfig(episodes=4, seed=9_999)), r"^demo.seed 9999 with demo.episodes 4 collects from reset seeds 9,999..10,002, "
                                r"outside the demonstration seeds 0..9,999"),
        (dict(eval=EvalConfig(seed=2, episodes=3)), r"the evaluation seeds 2..4 overlap the demonstration seeds 0..3"),
    ],
)
def test_config_errors(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        CompareConfig(out=str(tmp_path), **{**TINY, **overrides})


# A value other than the default for every TrainConfig option a grid takes; options of a type without a
# generic choice (str, dict, list) must be listed here, so a new TrainConfig field cannot go untested.
NON_DEFAULT = {"policy": "transformer", "policy_options": {"d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 1},
               "history": 2, "chunk": 2, "steps": 6, "batch_size": 8, "lr": 3e-4, "ema_decay": 0.0,
               "optimizer_options": {"refresh_every": 2}, "obs_keys": ["flat"], "val_every": 3,
               "checkpoint_every": 3, "log_every": 2, "amp": "bf16"}


def _non_default(f) -> object:
    if f.name in NON_DEFAULT:
        return NON_DEFAULT[f.name]
    default = f.default if f.default is not MISSING else f.default_factory()
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default * 0.5 if default else 0.25
    raise AssertionError(f"give TrainConfig.{f.name} a test value in NON_DEFAULT")


def _flag_args(name: str, value: object) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else []
    if isinstance(value, dict):
        return [flag, json.dumps(value)]
    if isinstance(value, list):
        return [flag, ",".join(value)]
    return [flag, str(value)]


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_every_train_option_on_the_command_line_lands_in_every_run(tmp_path: Path, capsys, monkeypatch) -> None:
    # --compile must land in every run like the rest; what compiling does is tests/test_train_compile.py's
    # (compiling this grid's transformer twice would take most of the test's time).
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    values = {f.name: _non_default(f) for f in fields(TrainConfig) if f.name not in PER_CELL}
    args = [arg for name, value in values.items() for arg in _flag_args(name, value)]
    out = tmp_path / "grid"
    assert main(["compare", "--out", str(out), "--tasks", "Reach-v0", "--optimizers", "adamw,dopr-adamw", "--seeds", "1",
                 "--demo-episodes", "3", "--eval-episodes", "2", "--eval-num-envs", "2", "--no-progress", *args]) == 0
    assert "\ndopr-adamw - adamw " in capsys.readouterr().out  # the paired row of the printed (fitted) table
    assert json.loads((out / "compare_config.json").read_text())["train"] == values  # the full resolved template
    for optimizer in ("adamw", "dopr-adamw"):
        run_dir = out / "runs" / "Reach-v0" / optimizer / "seed0"
        saved = json.loads((run_dir / "config.json").read_text())
        assert {name: saved[name] for name in values} == values
        assert saved["optimizer"] == optimizer and saved["seed"] == 0 and saved["data"] == str(out / "data" / "Reach-v0.hdf5")
        checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        assert checkpoint["ema"] is None  # --ema-decay 0: no EMA
        group = checkpoint["optimizer"]["param_groups"][0]
        # DoPr's own options reach the DoPr run only, as damping does.
        assert group.get("refresh_every") == (2 if optimizer == "dopr-adamw" else None)


@pytest.mark.parametrize("args, config", [
    (["--ema-decay", "1.5"], dict(ema_decay=1.5)),
    (["--steps", "0"], dict(steps=0)),
    (["--val-every", "-1"], dict(val_every=-1)),
    (["--optimizer-options", '{"refresh_every": 0}'], dict(optimizer="dopr-adamw", optimizer_options={"refresh_every": 0})),
    (["--optimizer-options", '{"lr": 0.1}'], dict(optimizer_options={"lr": 0.1})),
    (["--policy-options", '{"widht": 3}'], dict(policy_options={"widht": 3})),
])
def test_a_bad_train_option_gives_the_train_config_message(tmp_path: Path, capsys, args: list[str], config: dict) -> None:
    with pytest.raises(UserError):
        TrainConfig(data="x", out="y", **config)
    optimizer = config.get("optimizer", "adamw")
    assert main(["train", "--data", "x.hdf5", "--out", str(tmp_path / "run"), "--optimizer", optimizer, *args]) == 2
    # The flags given, in either command (a cell's optimizer comes from compare's --optimizers).
    expected = capsys.readouterr().err.removeprefix("dopr-robot train: error: ").replace("--optimizer ", "--optimizers ")
    assert main(["compare", "--out", str(tmp_path / "grid"), *TINY_ARGS, *args]) == 2
    assert capsys.readouterr().err == f"dopr-robot compare: error: {expected}"
    assert not (tmp_path / "grid").exists()  # refused before any work


def test_config_file_takes_the_nested_form_and_names_bad_keys(tmp_path: Path, capsys) -> None:
    from dopr_robot.commands import compare as command
    from dopr_robot.config import resolve_config
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    good = tmp_path / "grid.json"
    good.write_text(json.dumps({"tasks": ["Reach-v0"], "seeds": 3, "train": {"lr": 3e-4, "steps": 80},
                                "eval": {"episodes": 7}}))
    config = resolve_config(CompareConfig, parser.parse_args(["--out", "o", "--config", str(good), "--steps", "40"]))
    assert config.train == train_template(lr=3e-4, steps=40) and config.train.val_every == 4  # steps // 10, from 40
    assert config.eval == EvalConfig(episodes=7) and config.seeds == 3 and config.tasks == ["Reach-v0"]
    for content, message in [
        ({"lr": 0.1}, 'unknown option lr (put it under "train": {"train": {"lr": ...}})'),
        ({"train": {"seed": 3}}, "train.seed cannot be set here: compare sets it for each cell"),
        ({"train": {"lr": "fast"}}, "train.lr must be a number, got 'fast'"),
        ({"eval": {"episodes": 2.5}}, "eval.episodes must be an integer, got 2.5"),
        ({"eval": {"size": [64, 64]}}, "eval.size cannot be set here: compare makes no videos"),
        ({"train": []}, "train must be a JSON object of options"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        assert main(["compare", "--out", str(tmp_path / "x"), "--config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dopr-robot compare: error: config file {bad}: {message}") and err.count("\n") == 1
    # The eval options carry their prefix in messages from the command line.
    assert main(["compare", "--out", str(tmp_path / "x"), "--eval-episodes", "0"]) == 2
    assert capsys.readouterr().err == "dopr-robot compare: error: --eval-episodes must be >= 1, got 0\n"


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_demo_seed_changes_the_data_and_cannot_change_on_resume(tmp_path: Path, capsys) -> None:
    for seed in (0, 7):
        assert main(["compare", "--out", str(tmp_path / f"seed{seed}"), *TINY_ARGS, "--optimizers", "adamw",
                     "--demo-seed", str(seed)]) == 0
    first, other = (demos.load(tmp_path / f"seed{seed}" / "data" / "Reach-v0.hdf5") for seed in (0, 7))
    assert first.metadata["seed"] == 0 and other.metadata["seed"] == 7
    assert not np.array_equal(first.episodes[0].obs[0], other.episodes[0].obs[0])
    assert json.loads((tmp_path / "seed7" / "compare_config.json").read_text())["demo"]["seed"] == 7
    capsys.readouterr()
    assert main(["compare", "--out", str(tmp_path / "seed7"), *TINY_ARGS, "--optimizers", "adamw"]) == 2
    assert "holds a comparison made with other settings (changed: demo.seed (7 -> 0))" in capsys.readouterr().err


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_replicate_reruns_the_grid_on_fresh_data_and_evaluation_seeds(tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid"
    assert main(["compare", "--out", str(out), *TINY_ARGS, "--demo-seed", "5"]) == 0
    capsys.readouterr()
    assert main(["compare", "--out", str(out), "--replicate", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    replication = load_compare_config(out / "replication")
    original = load_compare_config(out)
    assert replication == replace(original, out=str(out / "replication"),
                                  demo=replace(original.demo, seed=REPLICATION_DEMO_SEED + 5),
                                  eval=replace(original.eval, seed=REPLICATION))
    assert demos.load(out / "replication" / "data" / "Reach-v0.hdf5").metadata["seed"] == REPLICATION_DEMO_SEED + 5
    for optimizer in ("adamw", "dopr-adamw"):
        result = json.loads((out / "replication" / "runs" / "Reach-v0" / optimizer / "seed0" / "eval.json").read_text())
        assert result["seed"] == REPLICATION
        assert json.loads((out / "replication" / "runs" / "Reach-v0" / optimizer / "seed0" / "config.json").read_text())["seed"] == 0
    report = (out / "replication.md").read_text()
    assert str(out / "replication.md") in printed and "dopr-adamw - adamw" in report  # printed fitted, in full in the file
    assert (out / "replication" / "summary.md").exists()
    # Resumable like any grid: a second call finds every cell done.
    assert main(["compare", "--out", str(out), "--replicate", "--no-progress"]) == 0


def _saved_grid(out: Path, **overrides) -> Path:
    out.mkdir()
    (out / "compare_config.json").write_text(json.dumps(config_to_dict(CompareConfig(out=str(out), **{**TINY, **overrides}))))
    return out


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: d, [], "holds no comparison (no compare_config.json)"),
    (lambda d: _saved_grid(d / "g"), [], "holds an unfinished comparison (4 of 4 runs not evaluated yet): finish it with "
                                          "`dopr-robot compare --config"),
    (lambda d: _saved_grid(d / "g", data={"Reach-v0": "reach.hdf5"}), [],
     "trained on given demonstration files (--data Reach-v0=reach.hdf5); --replicate collects fresh demonstrations"),
    (lambda d: _saved_grid(d / "g"), ["--lr", "0.1", "--seeds", "3"], "--replicate reruns the comparison saved in --out "
                                                                      "with its own settings: drop --seeds, --lr"),
])
def test_replicate_refusals(tmp_path: Path, capsys, setup, args: list[str], message: str) -> None:
    out = setup(tmp_path)
    assert main(["compare", "--out", str(out), "--replicate", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / "replication").exists()


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_a_grid_saved_in_the_earlier_flat_form_loads_as_the_same_grid(tmp_path: Path) -> None:
    (tmp_path / "compare_config.json").write_text(json.dumps({
        "out": "elsewhere", "tasks": ["Push-v0"], "optimizers": ["adamw", "dopr-adamw"], "seeds": 5, "data": {},
        "demo_episodes": 50, "demo_noise": 0.0, "policy": "mlp", "policy_options": {}, "history": 1, "chunk": 1,
        "steps": 2000, "batch_size": 256, "lr": 0.001, "weight_decay": 0.0, "damping": 0.01, "eval_episodes": 50,
        "eval_seed": 1000000, "num_envs": 8}))
    config = load_compare_config(tmp_path)
    assert config == CompareConfig(out=str(tmp_path), tasks=["Push-v0"], seeds=5)
    # The cadences the flat form derived by hand are today's defaults.
    assert (config.train.val_every, config.train.checkpoint_every, config.train.log_every) == (200, 500, 50)


# A value other than the default for every EvalConfig option a grid takes (the `--eval-*` options), and
# how each is seen in a cell's eval.json: a new EvalConfig field must be added to both.
NON_DEFAULT_EVAL = {"episodes": 3, "seed": POLICY_EVAL + 7, "num_envs": 2, "actions_per_chunk": 2,
                    "with_expert": False, "use_ema": False, "flow_steps": 3}


def _eval_flag_args(name: str, value: object) -> list[str]:
    """The command-line form of EvalConfig field ``name`` set to ``value`` in a grid (``--eval-*``)."""
    f = next(f for f in fields(EvalConfig) if f.name == name)
    flag = "--eval-" + (f.metadata.get("flag") or "--" + name.replace("_", "-"))[2:]
    if isinstance(value, bool):  # a boolean option is a flag that turns its default off
        return [flag] if value != f.default else []
    return [flag, str(value)]


def _hand_rollout(policy, task: str, seed: int, actions_per_chunk: int) -> float:
    """The return of one episode, stepped here one env at a time: history padded with the first
    observation, a chunk predicted every ``actions_per_chunk`` steps, a flow policy's noise from a
    generator seeded with the reset seed."""
    import envs

    env = envs.make(task)
    obs, _ = env.reset(seed=seed)
    history, generator = [obs] * policy.history, torch.Generator().manual_seed(seed)
    total, done, executed, plan = 0.0, False, actions_per_chunk, None
    with torch.no_grad():
        while not done:
            if executed == actions_per_chunk:
                window = torch.as_tensor(np.array(history[-policy.history:]), dtype=torch.float32)[None]
                plan, executed = policy.predict(window, generator=[generator])[0].numpy(), 0
            obs, reward, terminated, truncated, _ = env.step(plan[executed])
            executed += 1
            total += float(reward)
            history.append(obs)
            done = terminated or truncated
    env.close()
    return total


@pytest.mark.usefixtures("figures_not_rasterized_in_test")  # reads no figure
def test_every_eval_option_on_the_command_line_reaches_every_cell(tmp_path: Path) -> None:
    """Each --eval-* option is used by the cell's evaluation: its eval.json records it, and the returns
    equal an evaluation made here by hand with those settings (raw weights, 3 flow steps, 2 actions
    per chunk, one env), which differ from the returns the default of each setting gives."""
    passed = [f.name for f in fields(EvalConfig)
              if f.name not in next(c for c in fields(CompareConfig) if c.name == "eval").metadata["exclude"]]
    assert sorted(passed) == sorted(NON_DEFAULT_EVAL), "give every EvalConfig field compare takes a value and a check"
    defaults = EvalConfig()
    assert all(getattr(defaults, name) != value for name, value in NON_DEFAULT_EVAL.items())
    args = [arg for name, value in NON_DEFAULT_EVAL.items() for arg in _eval_flag_args(name, value)]
    out = tmp_path / "grid"
    assert main(["compare", "--out", str(out), "--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "1",
                 "--demo-episodes", "3", "--policy", "flow-mlp", "--policy-options", '{"width": 16, "depth": 1}',
                 "--history", "2", "--chunk", "2", "--steps", "6", "--batch-size", "16", "--lr", "0.01",
                 "--no-progress", *args]) == 0
    run_dir = out / "runs" / "Reach-v0" / "adamw" / "seed0"
    result = json.loads((run_dir / "eval.json").read_text())
    settings = NON_DEFAULT_EVAL
    # episodes and seed: one record per episode, reset seeds seed .. seed + episodes - 1
    assert [r["seed"] for r in result["records"]] == [settings["seed"] + i for i in range(settings["episodes"])]
    assert (result["episodes"], result["seed"]) == (settings["episodes"], settings["seed"])
    assert result["closed_loop"]["n"] == 3
    assert (result["num_envs"], result["actions_per_chunk"]) == (settings["num_envs"], settings["actions_per_chunk"])
    # with_expert off: no expert rollouts, so no compounding error and no expert fields in the records
    assert result["compounding"] is None and result["compounding_note"]
    assert not any({"j_traj", "expert_return", "time_to_divergence"} & set(r) for r in result["records"])
    assert result["checkpoint"]["use_ema"] is False and result["checkpoint"]["flow_steps"] == settings["flow_steps"]

    # The oracle: the checkpoint's weights loaded here, rolled out one env at a time.
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    spec = checkpoint["policy"]
    assert spec["name"] == "flow-mlp" and checkpoint["ema"] is not None

    def policy(weights: str, flow_steps: int):
        from policies import make_policy

        built = make_policy(spec["name"], spec["obs_dim"], spec["act_dim"], spec["history"], spec["chunk"],
                            **spec["config"])
        built.load_state_dict(checkpoint[weights])
        built.flow_steps = flow_steps
        return built.eval()

    raw = policy("model", settings["flow_steps"])
    expected = [_hand_rollout(raw, "Reach-v0", r["seed"], settings["actions_per_chunk"]) for r in result["records"]]
    assert [r["return"] for r in result["records"]] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # ...and each default would have given other returns (so the match above sees each setting).
    first = result["records"][0]["seed"]
    for name, other in [("use_ema", policy("ema", settings["flow_steps"])),
                        ("flow_steps", policy("model", spec["config"].get("flow_steps", 10))),
                        ("actions_per_chunk", raw)]:
        apc = defaults.actions_per_chunk if name == "actions_per_chunk" else settings["actions_per_chunk"]
        assert _hand_rollout(other, "Reach-v0", first, apc) != pytest.approx(expected[0], rel=1e-3), name
