"""Closed loop from a robomimic dataset: its ``env_args`` name the robosuite env that eval builds.

The file is written here in robomimic's layout (float64 observations under robomimic's keys, an
``env_args`` of type 1 = robosuite with a robosuite 1.4 controller config), from Lift episodes that
the scripted expert ran in the env built from those very env_args.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import envs
from dopr_robot.cli import main
from envs.robosuite_tasks import convert_controller_config, robosuite_installed

pytestmark = pytest.mark.skipif(not robosuite_installed(),
                                reason="robosuite not installed (pip install 'dopr-robot[robosuite]')")

# A robosuite <= 1.4.1 OSC_POSE config, as robomimic's Lift datasets carry it.
OLD_CONTROLLER = {"type": "OSC_POSE", "input_max": 1, "input_min": -1, "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
                  "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5], "kp": 150, "damping": 1,
                  "impedance_mode": "fixed", "kp_limits": [0, 300], "damping_limits": [0, 10], "position_limits": None,
                  "orientation_limits": None, "uncouple_pos_ori": True, "control_delta": True, "interpolation": None,
                  "ramp_ratio": 0.2}
ENV_KWARGS = {"has_renderer": False, "has_offscreen_renderer": False, "ignore_done": True, "use_object_obs": True,
              "use_camera_obs": False, "control_freq": 20, "controller_configs": OLD_CONTROLLER, "robots": ["Panda"],
              "camera_depths": False, "camera_heights": 84, "camera_widths": 84, "reward_shaping": False,
              "horizon": 50}  # not in robomimic's files: keeps the policy's failing episodes short here
OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos")


def write_robomimic_file(path: Path, episodes: list[dict[str, np.ndarray]], env_args: dict,
                         image_size: int = 0) -> Path:
    """robomimic's layout; with ``image_size`` also an ``agentview_image`` of that side (black: its shape is
    what matters)."""
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        for i, episode in enumerate(episodes):
            group = data.create_group(f"demo_{i}")
            for key in OBS_KEYS:
                group.create_dataset(f"obs/{key}", data=episode[key].astype(np.float64))
            if image_size:
                group.create_dataset("obs/agentview_image",
                                     data=np.zeros((len(episode["actions"]), image_size, image_size, 3), np.uint8))
            group.create_dataset("actions", data=episode["actions"].astype(np.float64))
            group.create_dataset("rewards", data=np.zeros(len(episode["actions"])))
            group.create_dataset("dones", data=np.eye(len(episode["actions"]))[-1])
            group.attrs["num_samples"] = len(episode["actions"])
        data.attrs["total"] = sum(len(e["actions"]) for e in episodes)
        data.attrs["env_args"] = json.dumps(env_args)
    return path


@pytest.fixture(scope="module")
def expert_episodes() -> list[dict[str, np.ndarray]]:
    """Two Lift episodes of the scripted expert in the env built from ENV_KWARGS (the old controller config)."""
    env, expert = envs.make("Lift", **ENV_KWARGS), envs.make_expert("Lift")
    controller = env._env.robots[0].composite_controller.part_controllers["right"]
    assert (controller.input_type, controller.input_ref_frame) == ("delta", "world")
    episodes = []
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        steps, actions, done = [obs], [], False
        while not done:
            actions.append(expert.act(obs["flat"]))
            obs, _, terminated, truncated, _ = env.step(actions[-1])
            steps.append(obs)
            done = terminated or truncated
        assert terminated, f"the expert did not lift the cube through the converted controller (seed {seed})"
        episode = {key: np.stack([o[key] for o in steps[:-1]]) for key in OBS_KEYS}
        episodes.append(episode | {"actions": np.array(actions)})
    env.close()
    return episodes


def test_an_old_controller_config_is_converted() -> None:
    config = convert_controller_config(OLD_CONTROLLER, ["Panda"])
    arm = config["body_parts"]["right"]
    assert config["type"] == "BASIC" and arm["type"] == "OSC_POSE" and arm["gripper"] == {"type": "GRIP"}
    assert (arm["damping_ratio"], arm["damping_ratio_limits"]) == (1, [0, 10]) and "damping" not in arm
    assert (arm["input_type"], arm["input_ref_frame"]) == ("delta", "world")
    assert convert_controller_config(config, ["Panda"]) is config  # a robosuite 1.5 config passes unchanged
    absolute = convert_controller_config(OLD_CONTROLLER | {"control_delta": False}, ["Panda"])
    assert absolute["body_parts"]["right"]["input_type"] == "absolute"


def test_train_then_eval_in_the_env_the_file_names(expert_episodes, tmp_path: Path, capsys) -> None:
    env_args = {"env_name": "Lift", "type": 1, "env_kwargs": ENV_KWARGS}
    data = write_robomimic_file(tmp_path / "low_dim.hdf5", expert_episodes, env_args)
    run, out = tmp_path / "run", tmp_path / "eval.json"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "5", "--batch-size", "16",
                 "--threads", "1", "--no-progress"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--episodes", "1", "--num-envs", "1", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["task"] == "Lift" and result["env_kwargs"] == ENV_KWARGS  # the file's env, as it gave it
    assert result["checkpoint"]["dataset"]["obs_keys"] == list(OBS_KEYS)  # robomimic's keys, read back at eval
    assert len(result["records"]) == 1 and all(1 <= r["length"] <= 50 for r in result["records"])
    # the Lift expert ran from the same initial states in the env built from the file's env_args, and lifted
    assert all(r["expert_success"] for r in result["records"])


def test_an_image_policy_is_evaluated_with_the_file_s_camera_at_its_size(expert_episodes, tmp_path: Path) -> None:
    env_kwargs = ENV_KWARGS | {"has_offscreen_renderer": True, "use_camera_obs": True, "camera_names": ["agentview"],
                               "camera_heights": 16, "camera_widths": 16, "horizon": 2}
    data = write_robomimic_file(tmp_path / "image.hdf5", expert_episodes,
                                {"env_name": "Lift", "type": 1, "env_kwargs": env_kwargs}, image_size=16)
    run, out = tmp_path / "run", tmp_path / "eval.json"
    tiny = {"width": 16, "depth": 1, "encoder_channels": 4, "encoder_features": 8}
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "2", "--batch-size", "8", "--threads", "1",
                 "--obs-keys", "agentview_image,object,robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos",
                 "--policy-options", json.dumps(tiny), "--no-progress"]) == 0
    # eval checks the env's observation space against the policy's first: agentview_image (16, 16, 3) is there
    assert main(["eval", "--checkpoint", str(run), "--episodes", "1", "--no-expert", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["records"][0]["length"] == 2


@pytest.mark.parametrize("env_args, says", [
    ({"env_name": "NoSuchEnv", "type": 1, "env_kwargs": {}}, "has no env of that name"),
    ({"env_name": "Stack", "type": 1, "env_kwargs": {}}, "robosuite env 'Stack': robosuite has it, but"),
    ({"env_name": "Lift", "type": 1, "env_kwargs": ENV_KWARGS | {"robots": ["NoSuchRobot"]}}, "cannot build Lift"),
])
def test_bad_env_args_fail_eval_but_not_train(expert_episodes, env_args: dict, says: str, tmp_path: Path,
                                              capsys) -> None:
    data = write_robomimic_file(tmp_path / "bad.hdf5", expert_episodes, env_args)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "2", "--batch-size", "8",
                 "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--episodes", "1", "--no-expert", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert env_args["env_name"] in error and says in error and len(error.strip().splitlines()) == 1
