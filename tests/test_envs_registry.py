"""The task registry: names, specs, errors, the table, gymnasium registration, SB3 weights loading."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import envs
import envs.registry
from dopr_robot.errors import UserError
from envs.experts.sb3 import load_sb3_expert
from envs.fetch import fetch_installed

LOCOMOTION = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"]


def test_list_tasks_covers_every_family() -> None:
    names = envs.list_tasks()
    assert names[:2] == ["Reach-v0", "Push-v0"]
    assert {"FetchReach-v4", "FetchPush-v4", "FetchPickAndPlace-v4", *LOCOMOTION} <= set(names)


def test_task_spec_is_frozen_and_describes_the_task() -> None:
    spec = envs.task_spec("Push-v0")
    assert (spec.name, spec.obs_dim, spec.act_dim, spec.horizon, spec.expert_kind) == ("Push-v0", 15, 2, 150, "scripted")
    assert spec.available and spec.unavailable_reason == ""
    assert "3 cm" in spec.success_criterion
    with pytest.raises(AttributeError):
        spec.horizon = 3  # type: ignore[misc]
    assert envs.task_spec("dopr/Push-v0") == spec


@pytest.mark.parametrize("call", [envs.make, envs.make_expert, envs.task_spec])
def test_unknown_name_lists_valid_names(call) -> None:
    with pytest.raises(UserError, match=r"unknown task 'Reacher-v9'; valid tasks: Reach-v0, Push-v0, .*Hopper-v5"):
        call("Reacher-v9")


@pytest.mark.parametrize("name", ["Reach-v0", "Push-v0", *LOCOMOTION])
def test_registry_sizes_match_built_envs(name: str) -> None:
    env = envs.make(name)
    spec = envs.task_spec(name)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    env.close()


def test_gymnasium_make_with_namespace() -> None:
    env = gymnasium.make("dopr/Reach-v0", horizon=5)
    obs, info = env.reset(seed=0)
    assert obs.shape == (18,) and "is_success" in info
    env.step(env.action_space.sample())
    assert callable(env.get_wrapper_attr("get_state"))
    env.close()


def test_describe_tasks_table() -> None:
    table = envs.describe_tasks()
    lines = table.splitlines()
    assert lines[0].split() == ["task", "obs", "act", "horizon", "expert", "cameras", "status"]
    assert len(lines) == 1 + len(envs.list_tasks())
    reach_line = next(line for line in lines if line.startswith("Reach-v0"))
    assert reach_line.split()[1:] == ["18", "3", "100", "scripted", "agentview,fixed", "available"]


def test_locomotion_without_weights_is_unavailable_with_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(envs.experts.sb3, "WEIGHTS_ROOT", tmp_path)
    spec = envs.task_spec("Hopper-v5")
    assert spec.expert_kind == "sb3" and not spec.available
    assert "no expert weights yet" in spec.unavailable_reason
    hopper_line = next(line for line in envs.describe_tasks().splitlines() if line.startswith("Hopper-v5"))
    assert hopper_line.endswith("unavailable: no expert weights yet (envs/experts/weights/Hopper-v5/)")
    with pytest.raises(UserError, match=r"no expert weights for Hopper-v5 yet.*dopr-robot expert train --task Hopper-v5"):
        envs.make_expert("Hopper-v5")


def test_fetch_missing_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # as if not installed: find_spec finds nothing
    spec = envs.task_spec("FetchPush-v4")
    assert not spec.available
    assert spec.unavailable_reason == "needs the fetch extra: pip install 'dopr-robot[fetch]'"
    assert "needs the fetch extra" in envs.describe_tasks()
    with pytest.raises(UserError, match=r"^task FetchPush-v4 is unavailable: needs the fetch extra: pip install "
                                        r"'dopr-robot\[fetch\]'$"):
        envs.make("FetchPush-v4")
    with pytest.raises(UserError, match="needs the fetch extra"):
        envs.make_expert("FetchPush-v4")


def test_an_optional_suite_is_one_registry_field(monkeypatch) -> None:
    """Any entry's ``extra`` makes its task unavailable, with the install command, while a module is missing."""
    suite = envs.registry.Extra("somesuite", ("json", "a_module_nobody_installs"))
    entry = dataclasses.replace(envs.registry.TASKS["Reach-v0"], extra=suite)
    monkeypatch.setitem(envs.registry.TASKS, "Reach-v0", entry)
    reason = "needs the somesuite extra: pip install 'dopr-robot[somesuite]'"
    assert envs.registry.missing_extra_reason(entry) == reason
    assert (envs.task_spec("Reach-v0").available, envs.task_spec("Reach-v0").unavailable_reason) == (False, reason)
    for call in (envs.make, envs.make_expert):
        with pytest.raises(UserError, match=r"task Reach-v0 is unavailable: needs the somesuite extra"):
            call("Reach-v0")
    installed = dataclasses.replace(entry, extra=envs.registry.Extra("somesuite", ("json",)))
    assert envs.registry.missing_extra_reason(installed) == ""
    assert {e.extra.name for e in envs.registry.TASKS.values() if e.extra} >= {"fetch"}


def test_fetch_availability_follows_install() -> None:
    assert envs.task_spec("FetchReach-v4").available == fetch_installed()


def test_sb3_expert_loads_from_weights_folder(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    env = envs.make("Hopper-v5")
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]}, device="cpu")
    folder = tmp_path / "Hopper-v5"
    folder.mkdir()
    model.save(folder / "model.zip")
    with pytest.raises(UserError, match=r"meta.json"):
        load_sb3_expert("Hopper-v5", 11, root=tmp_path)
    (folder / "meta.json").write_text(json.dumps({"algo": "ppo"}))

    expert = load_sb3_expert("Hopper-v5", 11, root=tmp_path)
    obs, _ = env.reset(seed=0)
    batch = np.stack([obs, obs + 0.1, obs - 0.1])
    action = expert.act(obs)
    assert action.shape == (3,) and action.dtype == np.float32
    np.testing.assert_allclose(expert.act(batch), np.stack([expert.act(row) for row in batch]), atol=1e-6)
    np.testing.assert_array_equal(expert.act(obs), action)  # deterministic
    with pytest.raises(UserError, match=r"expect observations of shape \(11,\)"):
        load_sb3_expert("Hopper-v5", 17, root=tmp_path)
    env.close()



def test_a_task_without_an_expert_is_unavailable_for_collection_with_that_reason(monkeypatch) -> None:
    # Whether robosuite is installed or not: with its extra present, Lift (scripted expert) is available and
    # the dataset-only tasks say they have no expert, instead of listing as available.
    monkeypatch.setattr(envs.registry, "missing_extra_reason", lambda entry: "")
    assert envs.task_spec("Lift").available
    for task in ("PickPlaceCan", "NutAssemblySquare", "ToolHang", "TwoArmTransport"):
        spec = envs.task_spec(task)
        assert (spec.available, spec.unavailable_reason) == (False, "no expert: for datasets"), task
