"""Camera observations of the own tasks: Dict observations with the flat state, named parts and images."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from dopr_robot.errors import UserError
from envs.rollout import ExpertController, rollout

OWN_TASKS = ("Reach-v0", "Push-v0")


def _pixels(image: np.ndarray, colour: str) -> int:
    """How many pixels are clearly of ``colour`` (the assets' marker colours)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    masks = {
        "red": (r > 150) & (g < 90) & (b < 90),  # Reach's target
        "blue": (b > r + 40) & (b > g + 10) & (r < 120),  # the arm / the pusher
        "green": (g > r + 60) & (g > b + 60),  # Push's goal
        "orange": (r > 170) & (g > 90) & (g < 180) & (b < 90),  # Push's puck
    }
    return int(masks[colour].sum())


@pytest.mark.parametrize("task", OWN_TASKS)
def test_dict_observation_holds_the_flat_state_its_named_parts_and_images(task: str) -> None:
    spec = envs.task_spec(task)
    assert "robot_state" in spec.obs_keys and "agentview" in spec.cameras
    assert sum(spec.obs_keys.values()) == spec.obs_dim
    plain = envs.make(task)
    seen = envs.make(task, cameras=("agentview",), image_size=(32, 24))
    try:
        flat, _ = plain.reset(seed=3)
        obs, _ = seen.reset(seed=3)
        assert seen.observation_space.contains(obs)
        assert obs["agentview_image"].shape == (24, 32, 3) and obs["agentview_image"].dtype == np.uint8
        rng = np.random.default_rng(0)
        for _ in range(5):  # rendering reads the simulation only: the states stay bit-identical
            action = rng.uniform(-1, 1, size=plain.action_space.shape)
            flat = plain.step(action)[0]
            obs = seen.step(action)[0]
            np.testing.assert_array_equal(obs["flat"], flat)
        parts = np.concatenate([obs[key] for key in spec.obs_keys])  # the named parts, in order, are the state
        np.testing.assert_array_equal(parts, flat)
    finally:
        plain.close()
        seen.close()


@pytest.mark.parametrize(("task", "colours"), [("Reach-v0", ("red", "blue")), ("Push-v0", ("green", "orange", "blue"))])
def test_agentview_shows_arm_object_and_goal_at_64_pixels(task: str, colours: tuple[str, ...]) -> None:
    env = envs.make(task, cameras=("agentview",), image_size=(64, 64))
    try:
        for seed in range(4):
            image = env.reset(seed=seed)[0]["agentview_image"]
            for colour in colours:
                assert _pixels(image, colour) >= 3, (task, seed, colour)
    finally:
        env.close()


def test_set_state_returns_the_images_of_that_state() -> None:
    env = envs.make("Push-v0", cameras=("agentview", "fixed"), image_size=(32, 32))
    try:
        env.reset(seed=1)
        state = env.unwrapped.get_state()
        before = env.step(np.array([1.0, 0.5]))[0]
        for _ in range(10):
            env.step(np.array([-1.0, 0.0]))
        after = env.unwrapped.set_state(state)
        again = env.step(np.array([1.0, 0.5]))[0]
        assert set(after) == set(before)
        for key in before:
            np.testing.assert_array_equal(again[key], before[key])
    finally:
        env.close()


def test_bad_cameras_are_one_line_naming_the_camera_and_the_choices() -> None:
    with pytest.raises(UserError, match=r"^task Reach-v0 has no camera 'wrist'; its cameras: agentview, fixed$"):
        envs.make("Reach-v0", cameras=("wrist",))
    with pytest.raises(UserError, match="task Hopper-v5 has no camera 'agentview'; its cameras: none"):
        envs.make("Hopper-v5", cameras=("agentview",))
    with pytest.raises(UserError, match=r"^image_size must be N or WIDTHxHEIGHT with sides 8\.\.1024 pixels"):
        envs.make("Reach-v0", cameras=("agentview",), image_size=(4, 64))


def test_rollout_of_dict_observations_keeps_states_and_images() -> None:
    expert = envs.make_expert("Reach-v0")
    kwargs = {"horizon": 6}
    plain = rollout(lambda: envs.make("Reach-v0", **kwargs), lambda k: ExpertController(expert, 3), [0, 1, 2], 2)
    seen = rollout(lambda: envs.make("Reach-v0", cameras=("agentview",), image_size=(16, 16), **kwargs),
                   lambda k: ExpertController(expert, 3), [0, 1, 2], 2)
    for a, b in zip(plain, seen):
        np.testing.assert_array_equal(a.states, a.obs)  # an array observation is the state
        np.testing.assert_array_equal(b.states, a.states)
        np.testing.assert_array_equal(b.actions, a.actions)
        assert b.obs["agentview_image"].shape == (7, 16, 16, 3)
        assert len({b.obs["agentview_image"][t].tobytes() for t in range(7)}) > 1  # frames are not one buffer


def test_compounding_error_is_measured_on_the_states_of_dict_observations() -> None:
    from dopr_robot.evaluate.metrics import episode_compounding

    expert = envs.make_expert("Reach-v0")

    class Pushed(ExpertController):  # the expert, nudged: a policy whose states drift from the expert's
        def act(self, obs, active):
            return super().act(obs, active) + 0.3

    make = lambda: envs.make("Reach-v0", cameras=("agentview",), image_size=(16, 16), horizon=5)  # noqa: E731
    (policy,) = rollout(make, lambda k: Pushed(expert, 3), [4], 1)
    (reference,) = rollout(make, lambda k: ExpertController(expert, 3), [4], 1)
    std, zeros = np.full(18, 0.5), np.zeros((5, 3))
    result = episode_compounding(policy, reference, np.zeros(18), std, np.ones(3), zeros, zeros, zeros, zeros)
    expected = np.linalg.norm((policy.obs["flat"] - reference.obs["flat"]) / std, axis=-1)
    np.testing.assert_allclose(result["deviation"], expected)
    assert result["deviation"][-1] > 0


@pytest.mark.skipif(not envs.registry.fetch_installed(), reason="needs the fetch extra (gymnasium-robotics)")
def test_fetch_cameras_leave_the_states_bit_identical_and_show_object_and_goal() -> None:
    spec = envs.task_spec("FetchPush-v4")
    parts = envs.obs_key_slices("FetchPush-v4")
    covered = np.concatenate([np.arange(spec.obs_dim)[part] for part in parts.values()])
    assert sorted(covered.tolist()) == list(range(spec.obs_dim))  # the named parts cover the state once
    plain = envs.make("FetchPush-v4")
    seen = envs.make("FetchPush-v4", cameras=("agentview",), image_size=(64, 64))
    try:
        flat, _ = plain.reset(seed=2)
        obs, _ = seen.reset(seed=2)
        for _ in range(5):
            flat = plain.step(np.array([0.5, -0.5, 0.2, 1.0]))[0]
            obs = seen.step(np.array([0.5, -0.5, 0.2, 1.0]))[0]
            np.testing.assert_array_equal(obs["flat"], flat)
        for key, part in parts.items():
            np.testing.assert_array_equal(obs[key], flat[part])
        image = obs["agentview_image"].astype(int)
        assert ((image[..., 0] > 150) & (image[..., 1] < 80)).sum() >= 1  # the red goal marker is drawn
        assert (image.max(axis=-1) < 50).sum() >= 4  # the black block
    finally:
        plain.close()
        seen.close()


def test_a_script_that_never_closes_its_camera_env_exits_quietly() -> None:
    """Left to their own __del__, GL contexts are freed after mujoco has terminated the EGL display and print an
    EGLError traceback at exit; the renderers still open are closed before that."""
    import subprocess
    import sys

    script = ("import envs\n"
              "env = envs.make('Reach-v0', cameras=['agentview'])\n"
              "print(env.reset(seed=0)[0]['agentview_image'].shape)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "(64, 64, 3)\n"
    assert done.stderr == ""
