"""Fetch tasks (optional extra): flat observations, success flag, scripted experts, state replay.

Fetch steps at ~1.4k/s, so each test runs one or two 50-step episodes.
"""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.fetch import fetch_installed

pytestmark = pytest.mark.skipif(
    not fetch_installed(), reason="gymnasium-robotics not installed (pip install 'dopr-robot[fetch]')"
)


def _episode(name: str, seed: int) -> tuple[np.ndarray, list[dict]]:
    env, expert = envs.make(name), envs.make_expert(name)
    obs, info = env.reset(seed=seed)
    observations, infos = [obs], [info]
    truncated = False
    while not truncated:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        assert not terminated
        observations.append(obs)
        infos.append(info)
    env.close()
    return np.array(observations), infos


def test_flat_observation_order() -> None:
    env = envs.make("FetchPush-v4")
    obs, info = env.reset(seed=0)
    inner = env.unwrapped._get_obs()
    env.close()
    assert obs.shape == (31,) and obs.dtype == np.float32 and info["is_success"] is False
    np.testing.assert_allclose(obs[:25], inner["observation"], atol=1e-6)
    np.testing.assert_allclose(obs[25:28], inner["achieved_goal"], atol=1e-6)
    np.testing.assert_allclose(obs[28:31], inner["desired_goal"], atol=1e-6)


@pytest.mark.parametrize("name, seeds", [("FetchReach-v4", [0]), ("FetchPush-v4", [0, 1])])
def test_expert_succeeds_and_flag_is_bool(name: str, seeds: list[int]) -> None:
    for seed in seeds:
        observations, infos = _episode(name, seed)
        assert len(observations) == envs.task_spec(name).horizon + 1
        assert all(isinstance(info["is_success"], bool) for info in infos)
        assert infos[-1]["is_success"], f"{name} expert failed on seed {seed}"


def test_pick_and_place_expert_batched_matches_single() -> None:
    observations, _ = _episode("FetchPickAndPlace-v4", seed=0)
    expert = envs.make_expert("FetchPickAndPlace-v4")
    np.testing.assert_allclose(expert.act(observations), np.stack([expert.act(o) for o in observations]), atol=1e-6)


def test_fetch_state_replay() -> None:
    env, expert = envs.make("FetchPush-v4"), envs.make_expert("FetchPush-v4")
    obs, _ = env.reset(seed=3)
    for _ in range(15):
        obs, *_ = env.step(expert.act(obs))
    state = env.get_state()
    actions = [expert.act(obs)] + [np.zeros(4, dtype=np.float32)] * 9
    original = [env.step(action)[0] for action in actions]
    env.reset(seed=4)
    env.set_state(state)
    replayed = [env.step(action)[0] for action in actions]
    env.close()
    np.testing.assert_array_equal(np.array(replayed), np.array(original))
