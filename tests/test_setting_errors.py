"""A config refuses a value naming its field; the command line names the flag the user typed: the
nested collection config's episodes are --episodes in collect and --demo-episodes in compare, the
training template's lr is --lr, an execution field its option; in Python the field's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from dopr_robot.cli import main
from dopr_robot.collect_config import CollectConfig
from dopr_robot.compare import CompareConfig, train_template
from dopr_robot.config import EvalConfig, SettingError, TrainConfig
from dopr_robot.errors import UserError
from dopr_robot.grid import Execution


@pytest.mark.parametrize("argv, message", [
    (["collect", "--task", "Reach-v0", "--out", "{tmp}/d.hdf5", "--episodes", "0"],
     "--episodes must be a count >= 1 or a list of them, got 0"),
    (["compare", "--out", "{tmp}/g", "--demo-episodes", "0"], "--demo-episodes must be a count >= 1 or a list of them, got 0"),
    (["compare", "--out", "{tmp}/g", "--demo-seed", "-1"], "--demo-seed must be >= 0, got -1"),
    (["compare", "--out", "{tmp}/g", "--demo-max-attempts", "3"], "--demo-max-attempts applies only with --demo-success-only"),
    (["compare", "--out", "{tmp}/g", "--lr", "-1"], "--lr must be >= 0, got -1.0"),
    (["compare", "--out", "{tmp}/g", "--eval-episodes", "0"], "--eval-episodes must be >= 1, got 0"),
    (["compare", "--out", "{tmp}/g", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["compare", "--out", "{tmp}/g", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["compare", "--out", "{tmp}/g", "--demo-episodes", "5,10", "--data", '{"Reach-v0": "x.hdf5"}', "--tasks", "Reach-v0"],
     "--data gives the demonstrations, so it cannot be used with several --demo-episodes (5, 10)"),
    (["sweep", "--out", "{tmp}/s", "--demo-episodes", "5", "--dampings", "-1"], "--dampings must be numbers >= 0"),
    (["sweep", "--out", "{tmp}/s", "--demo-episodes", "5,10"],
     "the sweep tunes on one demonstration count, the grid lists 5, 10: give one, e.g. --demo-episodes 10"),
    (["train", "--data", "d.hdf5", "--out", "{tmp}/t", "--ema-decay", "1"], "--ema-decay must be in [0, 1), got 1.0"),
    (["dagger", "--task", "Push-v0", "--out", "{tmp}/d", "--demo-episodes", "2,3"], "--demo-episodes takes one count"),
])
def test_the_command_line_names_the_flag_that_was_typed(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dopr-robot {argv[0]}: error: {message}") and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("build, message", [
    (lambda: CollectConfig(episodes=0), "episodes must be a count >= 1 or a list of them, got 0"),
    (lambda: CollectConfig(max_attempts=3), "max_attempts applies only with success_only"),
    (lambda: TrainConfig(data="d", out="o", batch_size=0), "batch_size must be >= 1, got 0"),
    (lambda: EvalConfig(num_envs=0), "num_envs must be >= 1, got 0"),
    (lambda: Execution(workers=0), "workers must be >= 1, got 0"),
    (lambda: CompareConfig(out="o", train=train_template(lr=-1.0)), "lr must be >= 0, got -1.0"),
    (lambda: CompareConfig(out="o", seeds=0), "seeds must be >= 1, got 0"),
])
def test_in_python_the_field_is_named(build, message: str) -> None:
    with pytest.raises(SettingError) as caught:
        build()
    assert str(caught.value).startswith(message) and "--" not in str(caught.value)


def test_a_nested_configs_field_is_named_by_its_path_in_a_config_file(tmp_path: Path, capsys) -> None:
    """A --config file's keys are the fields' dotted paths; the option given names its flag."""
    from dopr_robot.config import config_from_dict

    with pytest.raises(UserError, match=r"^demo\.episodes must be a count >= 1"):
        config_from_dict(CompareConfig, {"out": "o", "demo": {"episodes": 0}})
    with pytest.raises(UserError, match=r"^train\.lr must be >= 0"):
        config_from_dict(CompareConfig, {"out": "o", "train": {"lr": -1.0}})
