"""The one resume check (dopr_robot/run_dir.py): the settings saved in an output directory against
the asked ones, each difference named, the fix in one line; a damaged saved file, or a key this
version does not know, is one line too, for training, a comparison, a sweep and a DAgger run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dopr_robot.cli import main
from dopr_robot.config import TrainConfig
from dopr_robot.dagger import DaggerConfig, prepare, train_template
from dopr_robot.errors import UserError
from dopr_robot.run_dir import changed_settings, refuse_changes
from dopr_robot.train import train

DAMAGED = [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object of settings, got list")]


def test_each_difference_is_named_in_the_asked_order_with_its_values() -> None:
    saved = {"lr": 0.1, "steps": 10, "out": "a", "dropped": 1}
    asked = {"steps": 12, "lr": 0.2, "out": "b"}
    assert changed_settings(saved, asked, skip=("out",)) == [
        "steps (10 -> 12)", "lr (0.1 -> 0.2)", "dropped (saved by another version; not a setting of this one)"]
    assert changed_settings(saved, asked, skip=("out", "dropped"), values=False) == ["steps", "lr"]
    same_name = lambda key, old, new: Path(old).name == Path(new).name  # noqa: E731
    assert changed_settings({"data": "x/d.hdf5"}, {"data": "y/d.hdf5"}, same=same_name) == []
    assert changed_settings({}, {"amp": False}) == ["amp (None -> False)"]  # a key the saved file lacks differs


def test_a_refusal_is_one_line_with_the_fix() -> None:
    refuse_changes([], "unused", "unused")  # nothing changed: no error
    with pytest.raises(UserError) as caught:
        refuse_changes(["a (1 -> 2)", "b"], "X holds a run made with other settings", "use another --out")
    assert str(caught.value) == "X holds a run made with other settings (changed: a (1 -> 2), b); use another --out"


@pytest.mark.parametrize("content, message", DAMAGED)
def test_a_damaged_saved_training_config_is_one_line_on_resume(reach_demos: Path, tmp_path: Path, content: str,
                                                               message: str) -> None:
    config = TrainConfig(data=str(reach_demos), out=str(tmp_path / "run"), steps=2, batch_size=8, warmup_steps=1,
                         policy_options={"width": 8, "depth": 1})
    train(config, progress=False)
    (tmp_path / "run" / "config.json").write_text(content)
    with pytest.raises(UserError, match=rf"{tmp_path / 'run' / 'config.json'} {message}"):
        train(config, resume=True, progress=False)


def test_a_training_config_saved_with_a_key_this_version_lacks_is_named(reach_demos: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(reach_demos), out=str(tmp_path / "run"), steps=2, batch_size=8, warmup_steps=1,
                         policy_options={"width": 8, "depth": 1})
    train(config, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**saved, "frobnicate": 3}))
    with pytest.raises(UserError, match=r"with a different config \(changed: frobnicate \(saved by another version"):
        train(config, resume=True, progress=False)


def dagger_config(tmp_path: Path, **overrides) -> DaggerConfig:
    return DaggerConfig(**{**dict(out=str(tmp_path / "dagger"), task="Linear", rounds=1, episodes_per_round=2,
                                  steps_per_round=4, train=train_template(steps=4, batch_size=8)), **overrides})


@pytest.mark.parametrize("content, message", DAMAGED)
def test_a_damaged_saved_dagger_config_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    prepare(dagger_config(tmp_path))
    (tmp_path / "dagger" / "dagger_config.json").write_text(content)
    with pytest.raises(UserError, match=message):
        prepare(dagger_config(tmp_path))


def test_a_dagger_run_saved_with_a_key_this_version_lacks_is_refused(tmp_path: Path) -> None:
    prepare(dagger_config(tmp_path))
    saved_file = tmp_path / "dagger" / "dagger_config.json"
    saved_file.write_text(json.dumps({**json.loads(saved_file.read_text()), "frobnicate": 3}))
    with pytest.raises(UserError, match=r"holds a DAgger run with other settings \(changed: frobnicate \(saved by "
                                        r"another version; not a setting of this one\)\); rerun it with its own"):
        prepare(dagger_config(tmp_path))
    prepare(dagger_config(tmp_path / "other"))  # elsewhere it starts


@pytest.mark.parametrize("command, saved_name", [("compare", "compare_config.json"), ("sweep", "sweep_config.json")])
@pytest.mark.parametrize("content, message", DAMAGED)
def test_a_damaged_saved_grid_config_is_one_line_before_any_work(tmp_path: Path, capsys, command: str,
                                                                 saved_name: str, content: str, message: str) -> None:
    out = tmp_path / "grid"
    out.mkdir()
    (out / saved_name).write_text(content)
    assert main([command, "--out", str(out), "--tasks", "Reach-v0", "--demo-episodes", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dopr-robot {command}: error: {out / saved_name} {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == [saved_name]
