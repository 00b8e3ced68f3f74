"""MetaWorld tasks (optional extra): seeded goals, latched success, state replay, experts, cameras, the CLI."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import envs
from dopr_robot.cli import main
from dopr_robot.commands import compare as compare_command
from dopr_robot.compare import resolve_compare_config
from dopr_robot.errors import UserError
from envs import seeds

needs_metaworld = pytest.mark.skipif(importlib.util.find_spec("metaworld") is None,
                                     reason="metaworld not installed (pip install 'dopr-robot[metaworld]')")
GOAL, OBJECT = slice(36, 39), slice(4, 7)
GRID = Path(__file__).resolve().parents[1] / "experiments" / "metaworld_five.json"


def _run(env, expert, obs, steps: int) -> tuple[np.ndarray, list[dict]]:
    observations, infos = [], []
    for _ in range(steps):
        obs, _, _, _, info = env.step(expert.act(obs))
        observations.append(obs)
        infos.append(info)
    return np.array(observations), infos


def test_the_tasks_are_listed_and_need_the_extra(monkeypatch) -> None:
    names = [f"MW-{task}-v3" for task in ("reach", "push", "pick-place", "door-open", "drawer-close", "button-press",
                                          "assembly", "peg-insert-side")]
    assert set(names) <= set(envs.list_tasks())
    spec = envs.task_spec("MW-push-v3")
    assert (spec.obs_dim, spec.act_dim, spec.expert_kind, sum(spec.obs_keys.values())) == (39, 4, "scripted", 39)
    assert "corner" in spec.cameras and "any step" in spec.success_criterion
    monkeypatch.setitem(sys.modules, "metaworld", None)  # as if not installed
    reason = envs.task_spec("MW-push-v3").unavailable_reason
    assert reason == "needs the metaworld extra: pip install 'dopr-robot[metaworld]'"
    with pytest.raises(UserError, match=r"task MW-push-v3 is unavailable: needs the metaworld extra"):
        envs.make("MW-push-v3")


@needs_metaworld
def test_the_reset_seed_alone_determines_goal_and_observation() -> None:
    env, other = envs.make("MW-push-v3"), envs.make("MW-push-v3")
    global_rng = np.random.get_state()[1].copy()
    first, _ = env.reset(seed=5)
    for _ in range(3):
        env.step(env.action_space.sample())
    other.reset(seed=123)  # another env's history must not matter
    np.testing.assert_array_equal(other.reset(seed=5)[0], first)
    np.testing.assert_array_equal(env.reset(seed=5)[0], first)
    starts = np.array([env.reset(seed=seed)[0] for seed in range(6)])
    assert len({tuple(goal) for goal in starts[:, GOAL]}) == 6 and len({tuple(o) for o in starts[:, OBJECT]}) == 6
    # MT1's distribution: object and goal x, y inside MetaWorld's reset space for push (object xyz, goal xyz;
    # the heights settle or follow the object).
    space = env.unwrapped._random_reset_space
    low, high = space.low[[0, 1, 3, 4]], space.high[[0, 1, 3, 4]]
    draws = np.concatenate([starts[:, OBJECT][:, :2], starts[:, GOAL][:, :2]], axis=1)
    assert np.all(draws >= low - 1e-6) and np.all(draws <= high + 1e-6)
    np.testing.assert_array_equal(np.random.get_state()[1], global_rng)  # the global NumPy generator is untouched
    env.close()
    other.close()


@needs_metaworld
def test_state_round_trip_includes_the_goal_and_replays_exactly() -> None:
    env, expert = envs.make("MW-push-v3"), envs.make_expert("MW-push-v3")
    obs, _ = env.reset(seed=3)
    _, _ = _run(env, expert, obs, 10)
    obs = env.step(expert.act(env.unwrapped._get_obs().astype(np.float32)))[0]
    state, saved_obs = env.get_state(), obs
    original, original_infos = _run(env, expert, obs, 12)
    env.reset(seed=4)  # another goal and object position
    restored = env.set_state(state)
    np.testing.assert_array_equal(restored, saved_obs)
    replayed, replayed_infos = _run(env, expert, restored, 12)
    np.testing.assert_array_equal(replayed, original)
    assert [i["in_place_reward"] for i in replayed_infos] == [i["in_place_reward"] for i in original_infos]
    with pytest.raises(ValueError, match="MetaWorld state has shape"):
        env.set_state(state[:-1])
    env.close()


@needs_metaworld
@pytest.mark.parametrize("name", ["MW-reach-v3", "MW-button-press-v3"])
def test_the_expert_succeeds_and_success_is_latched(name: str) -> None:
    env, expert = envs.make(name), envs.make_expert(name)
    for seed in (20_000, 20_001):
        obs, info = env.reset(seed=seed)
        assert info["is_success"] is False
        _, infos = _run(env, expert, obs, envs.task_spec(name).horizon)
        raw = [bool(i["success"]) for i in infos]
        # The oracle is MetaWorld's own per-step flag: is_success is its running OR.
        assert [i["is_success"] for i in infos] == list(np.logical_or.accumulate(raw)) and raw[-1] is not None
        assert infos[-1]["is_success"], f"{name} seed {seed}: the scripted expert did not succeed"
    assert env.step(env.action_space.sample())[4]["is_success"]  # past the horizon: still steps, still latched
    batch = np.stack([env.reset(seed=s)[0] for s in (1, 2, 3)])
    np.testing.assert_array_equal(expert.act(batch), np.stack([expert.act(row) for row in batch]))
    assert np.all(np.abs(expert.act(batch)) <= 1.0)
    env.close()


@needs_metaworld
def test_a_camera_frame_and_the_named_parts() -> None:
    env = envs.make("MW-reach-v3", cameras=("corner",), image_size=(32, 24))
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"flat", "robot_state", "object", "previous", "goal", "corner_image"}
    image = obs["corner_image"]
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8 and image.std() > 5  # a scene, not a blank
    np.testing.assert_array_equal(obs["robot_state"], obs["flat"][:4])
    np.testing.assert_array_equal(obs["goal"], obs["flat"][36:])
    unwrapped = env.unwrapped
    for camera in ("corner", "corner2"):  # upright: the image's up direction points up in the world
        image_up = unwrapped.data.cam_xmat[unwrapped.model.camera(camera).id].reshape(3, 3)[:, 1]
        assert image_up[2] > 0.5, camera
    with pytest.raises(UserError, match="task MW-reach-v3 has no camera 'agentview'; its cameras: corner"):
        envs.make("MW-reach-v3", cameras=("agentview",))
    env.close()


@needs_metaworld
def test_collect_train_eval_from_the_command_line(tmp_path: Path, capsys) -> None:
    data, run, out = tmp_path / "reach.hdf5", tmp_path / "run", tmp_path / "eval.json"
    assert main(["collect", "--task", "MW-reach-v3", "--episodes", "2", "--out", str(data), "--no-progress"]) == 0
    assert "wrote 2 episodes of MW-reach-v3 (200 transitions" in capsys.readouterr().out
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "10", "--batch-size", "16",
                 "--policy-options", '{"width": 16, "depth": 1}', "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--episodes", "2", "--num-envs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "MW-reach-v3" and result["closed_loop"]["n"] == 2
    assert all(record["length"] == 100 for record in result["records"])


@pytest.mark.parametrize("where", [[], ["--device", "cuda"], ["--ray", "auto"], ["--workers", "2"]])
def test_the_five_task_grid_names_registered_tasks_and_options(where: list[str]) -> None:
    """The same file wherever it runs: every key an option, five MetaWorld tasks, AdamW, Muon and their DoPr
    variants."""
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    config = resolve_compare_config(parser.parse_args(["--config", str(GRID), "--out", "o", *where]))
    assert len(set(config.tasks)) == 5 and all(t.startswith("MW-") and t in envs.list_tasks() for t in config.tasks)
    assert sorted(config.optimizers) == ["adamw", "dopr-adamw", "dopr-muon", "muon"]
    assert set(config.optimizer_settings) == set(config.optimizers)
    assert config.eval.seed == seeds.POLICY_EVAL and config.eval.use_ema and config.train.ema_decay > 0

