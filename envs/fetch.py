"""Fetch tasks of gymnasium-robotics (FetchReach/Push/PickAndPlace-v4), flattened for behavior cloning.

Optional: needs the ``fetch`` extra (``pip install 'dopr-robot[fetch]'``, i.e. gymnasium-robotics).
Nothing here imports gymnasium_robotics until an env is built, so ``envs`` imports without it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the mujoco import

import gymnasium
import numpy as np
from gymnasium import spaces

from envs._physics import get_physics_state, physics_state_size, set_physics_state, state_vector, use_fast_rendering
from dopr_robot.errors import UserError

FETCH_MISSING_REASON = "fetch extra not installed: pip install 'dopr-robot[fetch]'"


def fetch_installed() -> bool:
    """Whether gymnasium-robotics can be imported (checked without importing it)."""
    return importlib.util.find_spec("gymnasium_robotics") is not None


class FetchTask(gymnasium.Wrapper):
    r"""A gymnasium-robotics Fetch env with a flat observation and its own horizon.

    ## Action
    Unchanged: ``Box(-1, 1, (4,), float32)``, gripper displacement dx, dy, dz (times 0.05 m per step,
    through a mocap weld) and finger command (open > 0 > close; ignored where the gripper is blocked).

    ## Observation
    ``Box(-inf, inf, (D,), float32)``: the goal-env dict flattened in the order
    ``observation`` (10 for Reach, 25 for Push/PickAndPlace), ``achieved_goal`` (3),
    ``desired_goal`` (3); D = 16 or 31. The entries of ``observation`` are documented by
    gymnasium-robotics (gripper position first; for Push/PickAndPlace the object position at 3-5
    and the finger positions at 9-10).

    ## Reward
    Unchanged (sparse by default: -1 until the goal is reached, then 0).

    ## Success
    ``info["is_success"]`` (a bool, on every step and in the reset info) is True while the achieved
    goal (gripper for Reach, object otherwise) is within the env's ``distance_threshold`` (0.05 m)
    of the desired goal. An episode counts as a success when it holds on the final step.

    ## Starting state
    Unchanged: gymnasium-robotics' reset, seeded through ``reset(seed=...)``.

    ## Episode end
    Never ``terminated``. ``truncated`` after ``horizon`` steps (default 50, gymnasium-robotics'
    own limit), counted in this wrapper (the inner env has no ``TimeLimit``).
    """

    def __init__(self, env: gymnasium.Env, horizon: int = 50) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        super().__init__(env)
        dict_space = env.observation_space
        size = sum(dict_space[key].shape[0] for key in ("observation", "achieved_goal", "desired_goal"))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self.horizon = horizon
        self._elapsed_steps = 0
        use_fast_rendering(env.unwrapped.model)

    @staticmethod
    def flatten(obs: dict[str, np.ndarray]) -> np.ndarray:
        """``concat(observation, achieved_goal, desired_goal)`` as float32."""
        return np.concatenate([obs["observation"], obs["achieved_goal"], obs["desired_goal"]]).astype(
            np.float32
        )

    def _is_success(self, obs: dict[str, np.ndarray]) -> bool:
        distance = np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
        return bool(distance < self.env.unwrapped.distance_threshold)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._elapsed_steps = 0
        return self.flatten(obs), {**info, "is_success": self._is_success(obs)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._elapsed_steps += 1
        info = {**info, "is_success": bool(info["is_success"])}
        truncated = bool(truncated) or self._elapsed_steps >= self.horizon
        return self.flatten(obs), float(reward), bool(terminated), truncated, info

    # -- replayable state -----------------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """``[elapsed_steps, goal xyz, *mujoco_integration_state]`` (the mocap gripper target included)."""
        unwrapped = self.env.unwrapped
        physics = get_physics_state(unwrapped.model, unwrapped.data)
        return np.concatenate([[float(self._elapsed_steps)], np.asarray(unwrapped.goal, dtype=np.float64), physics])

    def set_state(self, state: np.ndarray) -> np.ndarray:
        """Restore a vector from :meth:`get_state` and return the observation there.

        The following steps replay exactly. The returned observation can differ from the one seen
        when the state was saved by about one physics substep in site positions and velocities:
        gymnasium-robotics reads those right after ``mj_step``, before they are recomputed.
        """
        unwrapped = self.env.unwrapped
        state = state_vector(state, 4 + physics_state_size(unwrapped.model), "Fetch",
                             "pass a vector returned by get_state() of the same task")
        unwrapped.goal = state[1:4].copy()
        set_physics_state(unwrapped.model, unwrapped.data, state[4:])
        self._elapsed_steps = int(state[0])
        return self.flatten(unwrapped._get_obs())


def make_fetch_env(
    task: str,
    horizon: int = 50,
    render_mode: str | None = None,
    width: int = 240,
    height: int = 240,
    **kwargs: Any,
) -> FetchTask:
    """Build ``task`` (a gymnasium-robotics id such as ``"FetchPush-v4"``) wrapped in :class:`FetchTask`.

    Extra keyword arguments (e.g. ``reward_type="dense"``) go to the gymnasium-robotics env.
    """
    if not fetch_installed():
        raise UserError(f"{task} is unavailable: {FETCH_MISSING_REASON}")
    from gymnasium_robotics.envs.fetch import pick_and_place, push, reach

    env_classes = {
        "FetchReach-v4": reach.MujocoFetchReachEnv,
        "FetchPush-v4": push.MujocoFetchPushEnv,
        "FetchPickAndPlace-v4": pick_and_place.MujocoFetchPickAndPlaceEnv,
    }
    env = env_classes[task](render_mode=render_mode, width=width, height=height, **kwargs)
    return FetchTask(env, horizon=horizon)
