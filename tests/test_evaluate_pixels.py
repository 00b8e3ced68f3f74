"""Evaluation from pixels: the controller builds low-dim and image histories from dict observations,
the relabelling reads them the same way, evaluate renders the policy's cameras, and a short pixel
training on Reach-v0 evaluates end to end."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces

from dopr_robot.config import EvalConfig, TrainConfig
from dopr_robot.errors import UserError
from dopr_robot.evaluate.checkpoints import evaluate_checkpoint
from dopr_robot.evaluate.evaluation import _but_last, camera_kwargs, evaluate, policy_actions
from dopr_robot.evaluate.rollout import PolicyController, rollout
from dopr_robot.evaluate.video import camera_panel, record_video
from dopr_robot.train import train
from policies import Policy, make_policy
from policies.encoders import ImageEncoderConfig

SIZE = 16  # the smallest images the encoders take are 15 pixels


class CountingEnv(gymnasium.Env):
    """Observations that say when they were made: step t of the episode from seed s gives
    robot_state [t, s], goal [-t], flat [t, s, -t] and an image whose every pixel is t. Moves
    nowhere; an episode lasts 3 + s % 3 steps."""

    observation_space = spaces.Dict({
        "flat": spaces.Box(-np.inf, np.inf, (3,), np.float32),
        "robot_state": spaces.Box(-np.inf, np.inf, (2,), np.float32),
        "goal": spaces.Box(-np.inf, np.inf, (1,), np.float32),
        "agentview_image": spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self) -> dict:
        t, s = float(self.t), float(self.seed)
        return {"flat": np.array([t, s, -t], np.float32), "robot_state": np.array([t, s], np.float32),
                "goal": np.array([-t], np.float32), "agentview_image": np.full((SIZE, SIZE, 3), self.t, np.uint8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.seed = 0, seed
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, self.t >= 3 + self.seed % 3, False, {"is_success": False}


class RecordingPolicy(Policy):
    """Returns zeros and keeps what each predict call was given."""

    def __init__(self, history: int):
        super().__init__(3, 2, history, 1, {"agentview_image": (SIZE, SIZE, 3)}, ImageEncoderConfig(encoder_channels=2))
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def predict(self, obs_history, generator=None, images=None):
        self.calls.append((obs_history.numpy().copy(), images["agentview_image"].numpy().copy()))
        return torch.zeros(len(obs_history), 1, 2)


def test_the_controller_builds_low_dim_and_image_histories_from_dict_observations() -> None:
    policy = RecordingPolicy(history=3)
    runs = rollout(CountingEnv, lambda k: PolicyController(policy, k, obs_keys=["robot_state", "agentview_image", "goal"]),
                   seeds=[0, 1, 2, 3], num_envs=2)
    assert [t.length for t in runs] == [3, 4, 5, 3]
    rows = 0
    for obs_history, images in policy.calls:
        for low_dim, frames in zip(obs_history, images):
            t = low_dim[-1, 0]
            expected_times = [max(t - 2, 0), max(t - 1, 0), t]  # padded with the first observation
            np.testing.assert_array_equal(low_dim[:, 0], expected_times)
            np.testing.assert_array_equal(low_dim[:, 2], [-x for x in expected_times])  # robot_state, then goal
            assert frames.dtype == np.uint8 and frames.shape == (3, SIZE, SIZE, 3)
            np.testing.assert_array_equal(frames.reshape(3, -1).min(axis=1), expected_times)
            np.testing.assert_array_equal(frames.reshape(3, -1).max(axis=1), expected_times)
            rows += 1
    assert rows == sum(t.length for t in runs)


def test_relabelling_reads_the_observations_the_way_the_rollout_did() -> None:
    torch.manual_seed(0)
    policy = make_policy("mlp", 3, 2, history=2, image_shapes={"agentview_image": (SIZE, SIZE, 3)},
                         width=16, depth=1, encoder_channels=4, encoder_features=4).eval()
    keys = ["goal", "agentview_image", "robot_state"]
    runs = rollout(CountingEnv, lambda k: PolicyController(policy, k, obs_keys=keys), seeds=[0, 1, 2], num_envs=2)
    relabelled = policy_actions(policy, [_but_last(t.obs) for t in runs], obs_keys=keys, batch_size=5)
    np.testing.assert_allclose(relabelled, np.concatenate([t.actions for t in runs]), rtol=0, atol=1e-6)


class FlatExpert:
    def act(self, states: np.ndarray) -> np.ndarray:
        return np.stack([states[:, 0], states[:, 1]], axis=1).astype(np.float32) * 0.0


def test_evaluate_a_pixel_policy_with_the_expert_in_state_space() -> None:
    policy = make_policy("mlp", 2, 2, image_shapes={"agentview_image": (SIZE, SIZE, 3)}, width=8, depth=1,
                         encoder_channels=2, encoder_features=2)
    config = EvalConfig(episodes=3, num_envs=2)
    result = evaluate(policy, "counting", config, make_env=CountingEnv, expert=FlatExpert(),
                      obs_keys=["agentview_image", "robot_state"])
    assert result.closed_loop["n"] == 3 and result.compounding is not None
    assert all(r["final_deviation"] == 0.0 for r in result.records)  # neither moves: the same states
    with pytest.raises(UserError, match="wrist_image that task counting does not give"):
        evaluate(make_policy("mlp", 2, 2, image_shapes={"wrist_image": (SIZE, SIZE, 3)}), "counting", config,
                 make_env=CountingEnv, obs_keys=["robot_state"])


def test_camera_kwargs_render_the_policy_images() -> None:
    assert camera_kwargs({}) == {}
    assert camera_kwargs({"agentview_image": (32, 48, 3)}) == {"cameras": ("agentview",), "image_size": (48, 32)}
    with pytest.raises(UserError, match="cannot be rendered"):
        camera_kwargs({"agentview_image": (32, 32, 3), "wrist_image": (64, 64, 3)})


def test_a_short_pixel_training_evaluates_end_to_end(demo_file, tmp_path: Path, one_thread) -> None:
    data = demo_file("Reach-v0", 3, cameras=["agentview"], image_size=(32, 32), env_kwargs={"horizon": 30})
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=4, batch_size=8,
                         obs_keys=["agentview_image", "robot_state"],
                         policy_options={"width": 16, "depth": 1, "encoder_channels": 4, "encoder_features": 8})
    result = train(config, progress=False, device="cpu")
    assert result.policy.image_shapes == {"agentview_image": (32, 32, 3)}
    evaluation = evaluate_checkpoint(tmp_path / "run", EvalConfig(episodes=2, num_envs=2), device="cpu")
    assert evaluation.closed_loop["n"] == 2 and evaluation.compounding is not None
    assert evaluation.env_kwargs == {"horizon": 30}  # the data's env, rendering the policy's camera at 32 px
    assert evaluation.env_steps == sum(r["length"] + r["expert_length"] for r in evaluation.records)


def test_the_video_panel_shows_the_pixels_the_policy_saw() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 20, 3), dtype=np.uint8)
    frames = camera_panel(images, 50)  # factor 3: 48 rows, one black row above and below
    assert len(frames) == 2 and frames[0].shape == (50, 60, 3)
    np.testing.assert_array_equal(frames[1][1:49:3, ::3], images[1])
    np.testing.assert_array_equal(frames[1][3, 4], images[1][0, 1])  # a pixel repeated, not interpolated
    assert not frames[0][0].any() and not frames[0][49].any()


def test_a_video_of_a_pixel_policy_shows_its_camera_between_policy_and_expert(tmp_path: Path, one_thread) -> None:
    import imageio.v2 as imageio

    torch.manual_seed(0)
    policy = make_policy("mlp", 12, 3, image_shapes={"agentview_image": (16, 16, 3)}, width=8, depth=1,
                         encoder_channels=2, encoder_features=2)
    video = record_video(policy, "Reach-v0", tmp_path / "v.gif", [0], env_kwargs={"horizon": 3}, size=(64, 48),
                         obs_keys=["agentview_image", "robot_state"])
    assert video["frames"] == 4 and video["with_expert"]
    frames = imageio.mimread(tmp_path / "v.gif")
    # policy 64 | gap 4 | camera 16 px scaled x3 = 48 | gap 4 | expert 64; banner 18 above 48 rows
    assert frames[0].shape[:2] == (18 + 48, 64 + 4 + 48 + 4 + 64)
