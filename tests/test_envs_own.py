"""Reach-v0 and Push-v0: API, rendering, determinism, state replay, and their scripted experts."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.experts.reach import arm_jacobian
from envs.reach import fingertip_position

OWN_TASKS = ["Reach-v0", "Push-v0"]


def _rollout(env: gymnasium.Env, expert: envs.Expert, seed: int, steps: int) -> tuple[np.ndarray, list[dict]]:
    obs, info = env.reset(seed=seed)
    observations, infos = [obs], [info]
    for _ in range(steps):
        obs, _, _, _, info = env.step(expert.act(obs))
        observations.append(obs)
        infos.append(info)
    return np.array(observations), infos


@pytest.mark.parametrize("name", OWN_TASKS)
def test_reset_step_spaces_and_info(name: str) -> None:
    env = envs.make(name)
    spec = envs.task_spec(name)
    obs, info = env.reset(seed=0)
    assert env.observation_space.dtype == np.float32 and obs.dtype == np.float32
    assert obs.shape == (spec.obs_dim,) and env.action_space.shape == (spec.act_dim,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert info["is_success"] is False
    truncated_at = None
    for step in range(1, spec.horizon + 1):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(info["is_success"], bool) and isinstance(reward, float)
        assert not terminated
        assert any(key.startswith("reward_") for key in info)
        if truncated:
            truncated_at = step
            break
    assert truncated_at == spec.horizon
    env.close()


@pytest.mark.parametrize("name", OWN_TASKS)
def test_check_env(name: str) -> None:
    env = gymnasium.make(f"dopr/{name}", render_mode="rgb_array", width=48, height=48).unwrapped
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # unbounded velocities, as in gymnasium
        check_env(env)
    env.close()


@pytest.mark.parametrize("name", OWN_TASKS)
def test_render_small_frame(name: str) -> None:
    env = envs.make(name, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=1)
    frame = env.render()
    env.close()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert frame.mean() > 20 and frame.std() > 5  # lit scene with visible structure


@pytest.mark.parametrize("name", OWN_TASKS)
def test_same_seed_same_trajectory_under_expert(name: str) -> None:
    env, expert = envs.make(name), envs.make_expert(name)
    first, _ = _rollout(env, expert, seed=7, steps=40)
    second, _ = _rollout(env, expert, seed=7, steps=40)
    other, _ = _rollout(env, expert, seed=8, steps=0)
    env.close()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("name", OWN_TASKS)
def test_set_state_replays_exactly(name: str) -> None:
    env, expert = envs.make(name), envs.make_expert(name)
    obs, _ = env.reset(seed=3)
    for _ in range(25):  # mid-episode, with contacts for Push
        obs, *_ = env.step(expert.act(obs))
    state = env.get_state()
    assert state.dtype == np.float64 and state.shape == (env.state_size,)
    original, _ = _rollout_from(env, expert, obs, steps=20)

    env.reset(seed=123)  # somewhere else entirely
    restored_obs = env.set_state(state)
    np.testing.assert_array_equal(restored_obs, obs)
    replayed, _ = _rollout_from(env, expert, restored_obs, steps=20)
    np.testing.assert_array_equal(replayed, original)
    with pytest.raises(ValueError, match="get_state"):
        env.set_state(state[:-1])
    env.close()


def _rollout_from(env: gymnasium.Env, expert: envs.Expert, obs: np.ndarray, steps: int) -> tuple[np.ndarray, bool]:
    observations, truncated = [], False
    for _ in range(steps):
        obs, _, _, truncated, _ = env.step(expert.act(obs))
        observations.append(obs)
    return np.array(observations), truncated


def test_step_counter_is_part_of_the_state() -> None:
    env, expert = envs.make("Reach-v0", horizon=10), envs.make_expert("Reach-v0")
    obs, _ = env.reset(seed=0)
    for _ in range(8):
        obs, *_ = env.step(expert.act(obs))
    state = env.get_state()
    env.reset(seed=1)
    obs = env.set_state(state)
    _, truncated = _rollout_from(env, expert, obs, steps=2)
    assert truncated
    env.close()


@pytest.mark.parametrize("name, episodes, min_successes", [("Reach-v0", 5, 5), ("Push-v0", 5, 4)])
def test_expert_succeeds(name: str, episodes: int, min_successes: int) -> None:
    env, expert = envs.make(name), envs.make_expert(name)
    horizon = envs.task_spec(name).horizon
    successes = 0
    for seed in range(episodes):
        _, infos = _rollout(env, expert, seed=seed, steps=horizon)
        successes += infos[-1]["is_success"]
    env.close()
    assert successes >= min_successes


@pytest.mark.parametrize("name", OWN_TASKS)
def test_expert_is_smooth(name: str) -> None:
    """No bang-bang: after the first few steps, actions change little from step to step."""
    env, expert = envs.make(name), envs.make_expert(name)
    observations, _ = _rollout(env, expert, seed=2, steps=envs.task_spec(name).horizon)
    env.close()
    actions = expert.act(observations)
    step_changes = np.abs(np.diff(actions[5:], axis=0)).max(axis=1)
    assert np.median(step_changes) < 0.05 and step_changes.max() < 0.5


@pytest.mark.parametrize("name", OWN_TASKS)
def test_batched_expert_matches_single(name: str) -> None:
    env, expert = envs.make(name), envs.make_expert(name)
    observations, _ = _rollout(env, expert, seed=4, steps=30)
    env.close()
    assert isinstance(expert, envs.Expert)
    batched = expert.act(observations)
    assert batched.shape == (len(observations), envs.task_spec(name).act_dim) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, np.stack([expert.act(obs) for obs in observations]), atol=1e-6)
    assert np.all(np.abs(batched) <= 1.0)
    with pytest.raises(ValueError, match="shape"):
        expert.act(observations[:, :-1])


def test_reach_expert_kinematics_match_mujoco() -> None:
    """The expert's arm model (constants mirrored from reach.xml) agrees with the simulated arm."""
    env = envs.make("Reach-v0")
    obs, _ = env.reset(seed=5)
    for _ in range(10):
        obs, *_ = env.step(env.action_space.sample())
        angles = np.arctan2(obs[3:6], obs[0:3])
        np.testing.assert_allclose(fingertip_position(angles), obs[9:12], atol=1e-5)
    # Finite-difference check of the analytic Jacobian.
    angles = angles.astype(np.float64)
    numeric = np.stack(
        [(fingertip_position(angles + d) - fingertip_position(angles - d)) / 2e-6 for d in np.eye(3) * 1e-6], axis=1
    )
    np.testing.assert_allclose(arm_jacobian(angles[None])[0], numeric, atol=1e-6)
    env.close()
