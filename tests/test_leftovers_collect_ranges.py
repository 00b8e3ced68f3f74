"""Collection settings are refused once, by CollectConfig, with the option typed (--image-size in
`collect`, --demo-image-size in `compare`); `demos.collect` names its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from dopr_robot.cli import main


@pytest.mark.parametrize(("command", "prefix"), [(["collect", "--task", "Reach-v0", "--episodes", "1"], ""),
                                                 (["compare", "--tasks", "Reach-v0"], "demo-")])
@pytest.mark.parametrize(("option", "value", "says"), [
    ("image-size", "4", "image-size must be N or WIDTHxHEIGHT with sides 8..1024 pixels, got (4, 4)"),
    ("cameras", "agentview,agentview", "cameras names a camera twice: agentview,agentview"),
])
def test_each_command_names_the_option_typed(command: list[str], prefix: str, option: str, value: str, says: str,
                                             tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main([*command, "--out", str(out), f"--{prefix}{option}", value, "--no-progress"]) == 2
    assert capsys.readouterr().err.endswith(f"error: --{prefix}{says}\n")
    assert not out.exists()
