"""Training refuses what it cannot honour, before any work, and says what it did: one source for each
setting, a resume on the inputs it started with, one-line errors for bad paths and option types, and
a log that survives a kill in the middle of a line."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import demos
from dopr_robot.checkpoint import load_checkpoint
from dopr_robot.cli import main
from dopr_robot.config import TrainConfig
from dopr_robot.errors import UserError
from dopr_robot.run_log import read_metrics, truncate_metrics
from dopr_robot.train import train

TINY = {"width": 16, "depth": 1}


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), steps=20, batch_size=16, lr=3e-3, warmup_steps=2, val_every=10,
                    checkpoint_every=10, log_every=5, policy_options=TINY)
    return TrainConfig(**{**settings, **overrides})


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["train", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- one source for each setting ---------------------------------------------------------------------

@pytest.mark.parametrize("options, field", [({"damping": 0.5}, "damping"), ({"grad_clip": 2.0}, "grad_clip"),
                                            ({"steps": 5}, "steps")])
def test_a_train_setting_inside_optimizer_options_is_refused(tmp_path: Path, options: dict, field: str) -> None:
    # In Python the fields are named (the command line names their flags: test_setting_errors.py).
    with pytest.raises(UserError, match=f"^optimizer_options must not set {next(iter(options))}: use {field}$"):
        TrainConfig(data="d.hdf5", out=str(tmp_path), optimizer="dopr-adamw", damping=0.02, optimizer_options=options)


@pytest.mark.parametrize("name", ["lr", "damping", "weight_decay", "grad_clip"])
def test_non_finite_hyperparameters_are_refused_up_front(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match=f"^{name} must be a finite number, got inf"):
        TrainConfig(data="d.hdf5", out=str(tmp_path), optimizer="dopr-adamw", **{name: math.inf})


@pytest.mark.parametrize("options, message", [
    ({"width": 64.0}, "--policy-options width must be an integer, got 64.0"),
    ({"depth": 1.5}, "--policy-options depth must be an integer, got 1.5"),
    ({"width": "64"}, "--policy-options width must be an integer, got '64'"),
    ({"dropout": "0.1"}, "--policy-options dropout must be a number, got '0.1'"),
])
def test_a_policy_option_of_the_wrong_type_is_one_line_and_leaves_nothing(reach_demos: Path, tmp_path: Path, capsys,
                                                                          options: dict, message: str) -> None:
    code, _, err = cli(capsys, "--data", str(reach_demos), "--out", str(tmp_path / "run"),
                       "--policy-options", json.dumps(options), "--steps", "2", "--no-progress")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


# -- output and config paths -------------------------------------------------------------------------

def test_out_that_is_a_file_or_under_a_file_is_refused_before_the_data_is_read(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    missing_data = str(tmp_path / "missing.hdf5")  # reading it would fail: the --out check must come first
    for out, message in ((a_file, f"{a_file} is a file; the run needs a directory"),
                         (a_file / "run", f"{a_file / 'run'}: {a_file} is a file, not a directory")):
        code, _, err = cli(capsys, "--data", missing_data, "--out", str(out), "--no-progress")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert a_file.read_text() == "mine"


def test_out_in_a_directory_it_cannot_write_is_refused_before_the_data_is_read(tmp_path: Path, capsys,
                                                                                monkeypatch) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # The tests run as root, whom permissions do not stop: the directory says it is not writable.
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    code, _, err = cli(capsys, "--data", str(tmp_path / "missing.hdf5"), "--out", str(locked / "run"), "--no-progress")
    assert code == 2 and f"no permission to write in {locked}" in err and len(err.strip().splitlines()) == 1, err


def test_config_that_is_a_directory_is_one_line(reach_demos: Path, tmp_path: Path, capsys) -> None:
    code, _, err = cli(capsys, "--data", str(reach_demos), "--out", str(tmp_path / "run"), "--config", str(tmp_path))
    assert code == 2 and f"config file {tmp_path}" in err and len(err.strip().splitlines()) == 1, err


# -- resumes -----------------------------------------------------------------------------------------

def test_resume_refuses_replaced_data_and_records_its_hash(reach_demos: Path, tmp_path: Path) -> None:
    data = tmp_path / "demos.hdf5"
    shutil.copyfile(reach_demos, data)
    config = tiny_config(data, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, evaluator=kill_at(15), evaluate_every=15, progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["step"] == 10
    assert checkpoint["dataset"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()

    demos.collect("Reach-v0", 6, data, seed=100, progress=False, overwrite=True)  # other demonstrations, same name
    with pytest.raises(UserError, match=rf"cannot resume .*: {data} is not the data the run started with \(its "
                                        r"content changed\); put the original back, or start a new run directory"):
        train(config, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 10  # untouched
    shutil.copyfile(reach_demos, data)  # the original back: the run continues
    assert train(config, resume=True, progress=False).step == 20


def test_resume_of_a_finished_run_reports_its_numbers(reach_demos: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    code, _, _ = cli(capsys, "--data", str(reach_demos), "--out", str(run_dir), "--steps", "10", "--batch-size", "16",
                     "--policy-options", json.dumps(TINY), "--no-progress")
    assert code == 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_loss = [line["train_loss"] for line in lines if "train_loss" in line][-1]
    val_loss = [line["val_loss"] for line in lines if "val_loss" in line][-1]
    before = (run_dir / "checkpoint.pt").read_bytes()
    code, out, _ = cli(capsys, "--resume", str(run_dir), "--no-progress")
    assert code == 0
    assert f"already finished (10 steps): train loss {train_loss:.5f}, validation loss {val_loss:.5f}" in out
    assert "nan" not in out and (run_dir / "checkpoint.pt").read_bytes() == before


def test_resume_with_another_out_is_refused(reach_demos: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(reach_demos, run_dir, steps=5), progress=False)
    code, _, err = cli(capsys, "--resume", str(run_dir), "--out", str(tmp_path / "other"), "--no-progress")
    assert code == 2 and "--resume continues" in err and "drop --out" in err, err
    assert not (tmp_path / "other").exists()


def test_resume_of_a_config_with_an_unknown_key_is_one_line(reach_demos: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(reach_demos, run_dir, steps=5), progress=False)
    saved = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**saved, "frobnicate": 3}))
    code, _, err = cli(capsys, "--resume", str(run_dir), "--no-progress")
    assert code == 2 and "unknown option frobnicate" in err and len(err.strip().splitlines()) == 1, err


def test_resume_after_a_kill_in_the_middle_of_a_log_line(reach_demos: Path, tmp_path: Path) -> None:
    whole = train(tiny_config(reach_demos, tmp_path / "whole"), evaluator=kill_at(-1), evaluate_every=5, progress=False)
    config = tiny_config(reach_demos, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        train(config, evaluator=kill_at(15), evaluate_every=5, progress=False)
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as log:
        log.write('{"step": 16, "train_lo')  # the line a kill cut short
    resumed = train(config, evaluator=kill_at(-1), evaluate_every=5, resume=True, progress=False)

    def records(run_dir: Path) -> list[dict]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in lines]

    assert records(resumed.run_dir) == records(whole.run_dir)
    expected, got = load_checkpoint(whole.run_dir)["model"], load_checkpoint(resumed.run_dir)["model"]
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def kill_at(kill_step: int):
    """An evaluator that logs nothing and stands in for a kill (Ctrl-C) at ``kill_step`` (never for -1)."""

    def evaluator(policy, step: int) -> dict:
        if step == kill_step:
            raise KeyboardInterrupt
        return {}

    return evaluator


# -- non-finite training ------------------------------------------------------------------------------

def test_non_finite_before_any_checkpoint_says_none_was_written_and_the_rerun_is_not_refused(
        reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", optimizer="sgd", lr=1e12, grad_clip=0.0, warmup_steps=0,
                         log_every=1, checkpoint_every=10, ema_decay=0.0)
    for attempt in range(2):  # the same command again: refused only for the same reason
        with pytest.raises(UserError, match=r"non-finite .*; no checkpoint was written \(try a lower --lr, or --grad-clip\)"):
            train(config, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -- the metrics log ------------------------------------------------------------------------------------

def test_read_metrics_skips_a_cut_last_line_and_names_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path) == []
    path.write_text('{"step": 1, "train_loss": 0.5}\n{"step": 2, "val_loss": NaN}\n{"step": 3, "tr')
    records = read_metrics(path)
    assert records[0] == {"step": 1, "train_loss": 0.5} and records[1]["step"] == 2 and len(records) == 2
    truncate_metrics(path, 1)
    assert path.read_text() == '{"step": 1, "train_loss": 0.5}\n'
    path.write_text('{"step": 1}\n{"step": 2, "tr\n{"step": 3}\n')
    with pytest.raises(UserError, match=f"{path} line 2 is not valid JSON"):
        read_metrics(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=f"{path} line 2 is not a metrics record"):
        read_metrics(path)


def test_the_data_fingerprint_of_a_minari_dataset_covers_every_file(tmp_path: Path) -> None:
    from dopr_robot.train import data_fingerprint

    def dataset(where: Path, content: bytes, name: str = "main_data.hdf5") -> Path:
        (where / "data").mkdir(parents=True)
        (where / "data" / "metadata.json").write_text('{"dataset_id": "toy"}')
        (where / "data" / name).write_bytes(content)
        return where

    original = data_fingerprint(str(dataset(tmp_path / "a", b"episodes")))
    assert original == data_fingerprint(str(dataset(tmp_path / "moved", b"episodes")))  # where it lies does not count
    assert original != data_fingerprint(str(dataset(tmp_path / "changed", b"episodez")))
    assert original != data_fingerprint(str(dataset(tmp_path / "renamed", b"episodes", "other.hdf5")))
    single = tmp_path / "demos.hdf5"
    single.write_bytes(b"episodes")
    assert data_fingerprint(str(single)) == hashlib.sha256(b"episodes").hexdigest()
    assert data_fingerprint(str(tmp_path / "nothing-here")) is None


def test_eval_every_needs_an_evaluator_and_one_cadence(reach_demos: Path, tmp_path: Path) -> None:
    config = tiny_config(reach_demos, tmp_path / "run", eval_every=10)
    with pytest.raises(UserError, match="--eval-every 10 needs an evaluator"):
        train(config, progress=False)
    with pytest.raises(UserError, match="eval_every=10 and the call evaluate_every=5; give one"):
        train(config, evaluator=kill_at(-1), evaluate_every=5, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_negative_seed_is_refused_like_collect_and_eval_refuse_theirs() -> None:
    with pytest.raises(UserError, match=r"^seed must be >= 0, got -1"):
        TrainConfig(data="x", out="y", seed=-1)
