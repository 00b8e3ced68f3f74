"""`dopr-robot collect` and `dopr-robot inspect` as a user meets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dopr_robot import __version__
from dopr_robot.cli import main


def test_collect_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reach.hdf5"
    assert main(["collect", "--task", "Reach-v0", "--episodes", "2", "--out", str(out), "--seed", "7",
                 "--noise", "0.05", "--no-progress"]) == 0
    assert "wrote 2 episodes of Reach-v0 (200 transitions" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    report = capsys.readouterr().out
    for expected in (
        "task         Reach-v0",
        f"dopr-robot {__version__} collect: scripted expert, noise 0.05, seed 7",
        "episodes     2 (train 1, valid 1)",
        "transitions  200",
        "observation  18 (keys: flat)",
        "action       3",
        "success      ",
    ):
        assert expected in report, report


def test_collect_success_only_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reach.hdf5"
    # Reach-v0 under noise 0.5: seeds 0, 1, 2 fail, 3 and 4 succeed.
    assert main(["collect", "--task", "Reach-v0", "--episodes", "2", "--out", str(out), "--noise", "0.5",
                 "--success-only", "--no-progress"]) == 0
    assert "success 100.0%, dropped 3 failed of 5 attempts" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    assert "attempts     5, dropped 3 failed episodes (success-only): seeds 0, 1, 2" in capsys.readouterr().out
    assert main(["collect", "--task", "Reach-v0", "--episodes", "2", "--out", str(tmp_path / "x.hdf5"), "--noise", "0.5",
                 "--success-only", "--max-attempts", "4", "--no-progress"]) == 2
    assert "succeeded in 1 of 4 attempts" in capsys.readouterr().err and not (tmp_path / "x.hdf5").exists()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "missing.hdf5"
    assert main(["inspect", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"dopr-robot inspect: error: {missing} does not exist; check the path, or create it "
        f"with `dopr-robot collect --out {missing}`\n"
    )
    assert captured.out == ""

    existing = tmp_path / "taken.hdf5"
    existing.write_bytes(b"x")
    assert main(["collect", "--task", "Reach-v0", "--episodes", "1", "--out", str(existing), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; choose another --out or pass --overwrite" in err


def test_collect_and_compare_take_the_same_collection_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dataclasses import fields

    from dopr_robot.collect_config import CollectConfig

    flags = ["--" + f.name.replace("_", "-") for f in fields(CollectConfig)]
    assert flags == ["--episodes", "--seed", "--noise", "--success-only", "--max-attempts", "--cameras", "--image-size"]
    for command, prefix in (("collect", "--"), ("compare", "--demo-")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        usage = capsys.readouterr().out
        for flag in flags:
            assert f"{prefix}{flag[2:]}" in usage, (command, flag)

    out = tmp_path / "x.hdf5"
    assert main(["collect", "--task", "Reach-v0", "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.endswith("error: the following argument is required: --episodes N (the number of "
                                            "episodes to write)\n")
    assert main(["collect", "--task", "Reach-v0", "--out", str(out), "--episodes", "2,3", "--no-progress"]) == 2
    assert capsys.readouterr().err.endswith("error: --episodes: collect writes one file, give one count (got 2,3)\n")
    assert main(["collect", "--task", "Reach-v0", "--out", str(out), "--episodes", "2", "--max-attempts", "5",
                 "--no-progress"]) == 2
    assert "--max-attempts applies only with --success-only" in capsys.readouterr().err
    assert not out.exists()
