"""The command line as a user meets it: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dopr_robot import __version__
from dopr_robot.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dopr_robot", *args], capture_output=True, text=True, timeout=120)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"dopr-robot {__version__}"


def test_optimizers_lists_the_registry_and_coverage(capsys: pytest.CaptureFixture) -> None:
    assert main(["optimizers", "--model", "attention", "--base", "muon"]) == 0
    out = capsys.readouterr().out
    assert "dopr-muon" in out and "1.qkv.weight" in out and "AP + muon" in out
    assert "12 of 17 parameter tensors get AP" in out


def test_unknown_model_is_one_line_and_exit_2() -> None:
    result = run_cli("optimizers", "--model", "resnet")
    assert result.returncode == 2
    assert result.stderr.strip() == "dopr-robot optimizers: error: unknown model 'resnet'; valid: mlp, attention"
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_optimizer_demo_runs_small(capsys: pytest.CaptureFixture) -> None:
    assert main(["optimizer-demo", "--optimizers", "adamw,dopr-adamw", "--max-steps", "50"]) == 0
    out = capsys.readouterr().out
    assert "dopr-adamw" in out and "condition number 1000" in out


def test_optimizer_demo_unknown_optimizer(capsys: pytest.CaptureFixture) -> None:
    assert main(["optimizer-demo", "--optimizers", "adamw,lion"]) == 2
    assert "unknown optimizer(s) lion" in capsys.readouterr().err


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "optimizers" in capsys.readouterr().out


def test_every_train_option_is_a_compare_option_of_the_same_name(capsys: pytest.CaptureFixture) -> None:
    import re
    from dataclasses import fields

    from dopr_robot.compare import PER_CELL
    from dopr_robot.config import TrainConfig

    helps = {}
    for command in ("train", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = capsys.readouterr().out
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        in_compare = re.search(rf"^\s+{flag}\s", helps["compare"], re.MULTILINE) is not None
        assert re.search(rf"^\s+{flag}\s", helps["train"], re.MULTILINE), flag
        if f.name not in PER_CELL:
            assert in_compare, flag
        elif f.name in ("optimizer", "seed"):  # compare sets them per cell (--optimizers, --seeds)
            assert not in_compare, flag


def test_a_bad_compare_option_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    # In this process: test_unknown_model_is_one_line_and_exit_2 runs the command's own process.
    assert main(["compare", "--out", str(tmp_path / "grid"), "--ema-decay", "1.5"]) == 2
    assert capsys.readouterr() == ("", "dopr-robot compare: error: --ema-decay must be in [0, 1), got 1.5\n")
    assert not (tmp_path / "grid").exists()


@pytest.mark.parametrize("args", [["--help"], []])
def test_the_command_list_imports_no_command(args: list[str]) -> None:
    """``dopr-robot --help`` (and no command) lists the commands without importing them: no torch,
    gymnasium, mujoco or h5py."""
    code = ("import sys\nfrom dopr_robot.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'gymnasium', 'mujoco', 'h5py') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert "optimizer-demo" in result.stdout and "DoPr vs its base optimizers" in result.stdout


def test_each_listed_help_line_is_its_commands_own() -> None:
    from dopr_robot.cli import COMMANDS, command_module

    for name, command in COMMANDS.items():
        assert command_module(name).HELP == command.help, name


def test_a_command_help_shows_its_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["optimizer-demo", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "--damping" in out and "--threads N" in out


@pytest.mark.parametrize("args, expected", [
    ([], dict(executor="serial", workers=1, threads=None, device="auto", progress=True)),
    (["--workers", "3", "--threads", "2", "--no-progress"], dict(executor="processes", workers=3, threads=2,
                                                                   progress=False)),
    (["--ray"], dict(executor="ray", address="local")),
    (["--ray", "auto", "--device", "cpu"], dict(executor="ray", address="auto", device="cpu")),
])
def test_the_execution_options_of_a_grid_command_make_its_execution(args: list[str], expected: dict) -> None:
    from dopr_robot.grid import Execution, execution_from_args

    if "--ray" in args:
        pytest.importorskip("ray")  # without it, --ray is refused (test_compare_parallel)
    for command in ("compare", "sweep"):
        parsed = build_parser((command,)).parse_args([command, *args])
        execution = execution_from_args(parsed)
        assert execution == Execution(**expected), command


def test_every_execution_field_with_a_flag_is_an_option_of_compare_and_sweep(capsys: pytest.CaptureFixture) -> None:
    from dataclasses import fields

    from dopr_robot.grid import Execution

    flags = [f.metadata["flag"] for f in fields(Execution) if "flag" in f.metadata]
    assert flags == ["--workers", "--ray", "--device", "--no-progress"]
    for command in ("compare", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert all(f"  {flag}" in out for flag in [*flags, "--threads"]), command
