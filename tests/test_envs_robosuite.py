"""robosuite tasks (optional extra): robomimic's keys, seeded resets, state replay, the Lift expert, cameras.

robosuite steps at ~100-200/s here and an env takes ~1 s to build (2.5 s for TwoArmTransport, which
is built only outside the suite), so the tests share one Lift env and run short episodes (the Lift
expert lifts within ~40 steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import envs
from dopr_robot.cli import main
from dopr_robot.errors import UserError
from envs.robosuite_tasks import robosuite_installed

pytestmark = pytest.mark.skipif(not robosuite_installed(),
                                reason="robosuite not installed (pip install 'dopr-robot[robosuite]')")

TASKS = ("Lift", "PickPlaceCan", "NutAssemblySquare", "ToolHang", "TwoArmTransport")


@pytest.fixture(scope="module")
def lift():
    env = envs.make("Lift")
    yield env
    env.close()


def test_tasks_are_listed_with_robomimic_sizes() -> None:
    assert set(TASKS) <= set(envs.list_tasks())
    # robomimic's low-dim observation (eef pos, eef quat, gripper qpos per robot, object) and OSC_POSE actions
    sizes = {"Lift": (19, 7), "PickPlaceCan": (23, 7), "NutAssemblySquare": (23, 7), "ToolHang": (53, 7),
             "TwoArmTransport": (59, 14)}
    for task, (obs_dim, act_dim) in sizes.items():
        spec = envs.task_spec(task)
        assert (spec.obs_dim, spec.act_dim) == (obs_dim, act_dim), task
        assert spec.obs_keys["robot0_eef_pos"] == 3 and sum(spec.obs_keys.values()) == obs_dim
    assert envs.task_spec("Lift").expert_kind == "scripted"
    assert (envs.task_spec("Lift").horizon, envs.task_spec("ToolHang").horizon) == (400, 700)  # robomimic's


def test_lift_observation_keys_match_robosuite(lift) -> None:
    obs, info = lift.reset(seed=3)
    raw = lift._env._get_observations(force_update=True)
    assert info["is_success"] is False
    assert obs["flat"].shape == (19,) and obs["flat"].dtype == np.float32
    assert lift.observation_space.contains(obs)
    for key in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos", "cube_pos"):
        np.testing.assert_allclose(obs[key], raw[key], atol=1e-6)
    np.testing.assert_allclose(obs["object"], raw["object-state"], atol=1e-6)  # robomimic's name for it
    parts = envs.obs_key_slices("Lift")
    for key in ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"):
        np.testing.assert_array_equal(obs["flat"][parts[key]], obs[key])


def test_reset_seed_decides_the_initial_state(lift) -> None:
    first = lift.reset(seed=11)[0]["flat"]
    other = lift.reset(seed=12)[0]["flat"]
    again = lift.reset(seed=11)[0]["flat"]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[9:12], other[9:12])  # the cube moved
    fresh = envs.make("Lift")  # another instance, another history of resets
    np.testing.assert_array_equal(fresh.reset(seed=11)[0]["flat"], first)
    fresh.close()


def test_state_replays_exactly(lift) -> None:
    """Steps after set_state repeat the recorded ones bit for bit, gripper closing included (robosuite's
    gripper command, observation cache and observation clocks are state MuJoCo does not hold)."""
    actions = np.random.default_rng(0).uniform(-1, 1, (16, 7)).astype(np.float32)
    actions[:, 6] = np.where(np.arange(16) < 8, 1.0, -1.0)
    lift.reset(seed=4)
    for action in actions[:6]:
        lift.step(action)
    state = lift.get_state()
    cache = {key: np.array(value) for key, value in lift._env._obs_cache.items()}
    recorded = [lift.step(action)[0]["flat"] for action in actions[6:]]
    lift.step(actions[0])
    lift.set_state(state)
    # some tasks' sensors read others' values from this cache as sampled a step before (PickPlaceCan's
    # Can_to_robot0_eef_pos): it must come back as it was, not as set_state's own read left it
    for key, value in cache.items():
        np.testing.assert_array_equal(lift._env._obs_cache[key], value, err_msg=key)
    replayed = [lift.step(action)[0]["flat"] for action in actions[6:]]
    np.testing.assert_array_equal(np.array(recorded), np.array(replayed))
    with pytest.raises(ValueError, match="get_state"):
        lift.set_state(state[:-1])


def test_lift_expert_lifts_the_cube(lift) -> None:
    expert = envs.make_expert("Lift")
    for seed in (20_000, 20_001):
        obs, _ = lift.reset(seed=seed)
        start_height = obs["cube_pos"][2]
        for _ in range(80):
            obs, _, terminated, truncated, info = lift.step(expert.act(obs["flat"]))
            if terminated or truncated:
                break
        assert terminated and info["is_success"], f"seed {seed}"
        # the oracle: the cube rose, as robosuite's criterion (4 cm above the table) says
        assert obs["cube_pos"][2] > start_height + 0.01
    batch = np.stack([lift.reset(seed=s)[0]["flat"] for s in (1, 2)])
    np.testing.assert_allclose(expert.act(batch), np.stack([expert.act(row) for row in batch]), atol=1e-6)


def test_datasets_only_tasks_have_no_expert() -> None:
    with pytest.raises(UserError, match="no expert: for datasets"):
        envs.make_expert("ToolHang")
    assert envs.task_spec("ToolHang").expert_kind == "none"


def test_camera_images_at_the_requested_size() -> None:
    env = envs.make("Lift", cameras=("agentview", "robot0_eye_in_hand"), image_size=(24, 16), horizon=2)
    obs, _ = env.reset(seed=0)
    image, hand = obs["agentview_image"], obs["robot0_eye_in_hand_image"]
    assert image.shape == hand.shape == (16, 24, 3) and image.dtype == np.uint8 and image.std() > 0
    assert env.observation_space["agentview_image"].shape == (16, 24, 3)
    # top row first, as robomimic stores images: the hand camera sees the table above its dark fingers
    assert hand[-2:].mean() < hand[:2].mean() - 50
    env.close()
    with pytest.raises(UserError, match="robot0_eye_in_hand"):
        envs.make("Lift", cameras=("nowhere",))


def test_collect_and_train_from_the_command_line(tmp_path: Path, capsys) -> None:
    """collect -> train through the CLI; eval of a Lift policy through the CLI is in test_robomimic_env_args.py."""
    data, run = tmp_path / "lift.hdf5", tmp_path / "run"
    assert main(["collect", "--task", "Lift", "--episodes", "1", "--out", str(data), "--no-progress"]) == 0
    assert "success 100.0%" in capsys.readouterr().out
    with h5py.File(data) as file:
        assert json.loads(file["data"].attrs["env_args"])["env_name"] == "Lift"
        obs = file["data/demo_0/obs"]
        assert {"flat", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"} <= set(obs)
        np.testing.assert_array_equal(obs["object"][()], obs["flat"][:, 9:19])
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "3", "--batch-size", "8",
                 "--obs-keys", "object,robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos",
                 "--threads", "1", "--no-progress"]) == 0


def test_a_mujoco_without_mass_matrix_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """robosuite 1.5.2 reads MjData.qM, which mujoco 3.11 removed: say so rather than fail inside a step."""
    import types

    import envs.robosuite_tasks as robosuite_tasks

    stub = types.SimpleNamespace(MjData=type("MjData", (), {}), __version__="3.11.0")
    monkeypatch.setattr(robosuite_tasks, "mujoco", stub)
    with pytest.raises(UserError, match="MjData.qM, which mujoco 3.11.0 no longer has; robosuite 1.5.2 runs on"):
        envs.make("Lift")
