"""Gymnasium locomotion tasks: construction, the episode-level success flag, state replay."""

from __future__ import annotations

import numpy as np
import pytest

import envs

LOCOMOTION = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"]


@pytest.mark.parametrize("name", LOCOMOTION)
def test_constructs_and_reports_is_success_every_step(name: str) -> None:
    env = envs.make(name, horizon=5, success_return=-1e9)  # any return counts: success iff not terminated
    _, info = env.reset(seed=0)
    assert info["is_success"] is False
    flags, terminated = [], False
    for _ in range(5):
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        flags.append(info["is_success"])
        if terminated or truncated:
            break
    env.close()
    assert all(isinstance(flag, bool) for flag in flags)
    assert flags == [False] * 4 + [True]  # decided at the horizon, after a healthy episode
    assert not terminated


def test_return_below_threshold_is_not_success() -> None:
    env = envs.make("HalfCheetah-v5", horizon=3)  # registry threshold 3000 cannot be reached in 3 steps
    env.reset(seed=0)
    infos = [env.step(env.action_space.sample())[4] for _ in range(3)]
    env.close()
    assert [info["is_success"] for info in infos] == [False, False, False]
    assert infos[-1]["episode_return"] < 3000


def test_terminated_episode_is_not_success() -> None:
    env = envs.make("Hopper-v5", success_return=-1e9)
    env.reset(seed=0)
    terminated, info = False, {}
    for _ in range(200):  # full torque on the foot topples the hopper quickly
        _, _, terminated, truncated, info = env.step(np.array([0.0, 0.0, 1.0], dtype=np.float32))
        if terminated or truncated:
            break
    env.close()
    assert terminated and info["is_success"] is False


def test_locomotion_state_replay() -> None:
    env = envs.make("Hopper-v5")
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(20, 3)).astype(np.float32)
    for action in actions[:10]:
        obs, *_ = env.step(action)
    state = env.get_state()
    original = [env.step(action)[0] for action in actions[10:]]
    env.reset(seed=2)
    np.testing.assert_array_equal(env.set_state(state), obs)
    replayed = [env.step(action)[0] for action in actions[10:]]
    env.close()
    np.testing.assert_array_equal(np.array(replayed), np.array(original))


def test_locomotion_render_small_frame() -> None:
    env = envs.make("Hopper-v5", render_mode="rgb_array", width=64, height=64)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (64, 64, 3) and frame.std() > 5
