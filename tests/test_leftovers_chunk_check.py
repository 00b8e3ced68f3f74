"""A policy head that cannot take the chunk (a U-Net halves it) is refused when the training config
is validated: `train`, `compare` and `sweep` say so in one line, exit 2, before any demonstration is
collected or loaded and before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

import demos
from dopr_robot.cli import main
from dopr_robot.config import SettingError, TrainConfig

UNET = ["--policy", "flow-unet", "--chunk", "12", "--policy-options", '{"unet_levels": 4}']
SAYS = "--policy flow-unet --chunk 12: chunk 12 cannot pass a U-Net of unet_levels=4"


def test_the_config_refuses_the_chunk_naming_its_fields() -> None:
    with pytest.raises(SettingError, match=r"^policy flow-unet chunk 12: chunk 12 cannot pass a U-Net of "
                                           r"unet_levels=4: .* multiple of 8 \(e\.g\. 8, 16, 32\)$"):
        TrainConfig(data="d.hdf5", out="run", policy="flow-unet", chunk=12, policy_options={"unet_levels": 4})
    TrainConfig(data="d.hdf5", out="run", policy="flow-unet", chunk=8, policy_options={"unet_levels": 4})


@pytest.mark.parametrize("command", [
    ["compare", "--tasks", "Reach-v0", "--optimizers", "adamw", "--seeds", "1", "--demo-episodes", "2"],
    ["sweep", "--tasks", "Reach-v0", "--bases", "adamw", "--lrs", "0.001", "--dampings", "0.01", "--seeds", "1",
     "--demo-episodes", "2"],
])
def test_grids_refuse_the_chunk_before_collecting(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def no_collection(*args, **kwargs):
        raise AssertionError("demonstrations collected before the chunk was checked")

    monkeypatch.setattr(demos, "collect", no_collection)
    out = tmp_path / "grid"
    assert main([*command, *UNET, "--out", str(out), "--threads", "1", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and SAYS in err and "Traceback" not in err, err
    assert not out.exists()


def test_train_refuses_the_chunk_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load(*args, **kwargs):
        raise AssertionError("demonstrations loaded before the chunk was checked")

    monkeypatch.setattr(demos, "load", no_load)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.hdf5"), "--out", str(out), *UNET, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and SAYS in err, err
    assert not out.exists()
