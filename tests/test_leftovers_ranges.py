"""Ranges are refused once, by the config, with the option's name; the library functions below it
name their parameters, and the command line still says the option typed."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import pytest

import envs
from dopr_robot.cli import main
from dopr_robot.config import EvalConfig, SettingError
from dopr_robot.evaluate.video import record_video
from envs.rollout import ExpertController, rollout, run_episodes
from policies import make_policy


def reach() -> gymnasium.Env:
    return envs.make("Reach-v0", horizon=3)


def test_the_rollout_loop_names_its_parameters() -> None:
    expert = envs.make_expert("Reach-v0")
    with pytest.raises(ValueError, match=r"^seeds must hold at least one reset seed, got none$"):
        rollout(reach, lambda k: ExpertController(expert, 3), [], 2)
    with pytest.raises(ValueError, match=r"^num_envs must be >= 1, got 0$"):
        next(run_episodes(reach, lambda k: ExpertController(expert, 3), [0], 0))


def test_a_video_of_no_episode_names_the_seeds(tmp_path: Path) -> None:
    policy = make_policy("mlp", 18, 3, width=8, depth=1)
    with pytest.raises(ValueError, match=r"^seeds must hold at least one reset seed, got none$"):
        record_video(policy, "Reach-v0", tmp_path / "v.mp4", [])
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("name", ["episodes", "seed", "num_envs", "actions_per_chunk", "fps", "flow_steps"])
def test_eval_config_refuses_a_count_that_is_not_an_integer(name: str) -> None:
    with pytest.raises(SettingError, match=rf"^{name} must be an integer, got 2.5$"):
        EvalConfig(**{name: 2.5})


def test_the_command_line_still_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), "--tasks", "Reach-v0", "--eval-num-envs", "0"]) == 2
    assert capsys.readouterr().err.endswith("error: --eval-num-envs must be >= 1, got 0\n")
    assert not out.exists()
