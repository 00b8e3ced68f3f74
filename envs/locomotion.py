"""Gymnasium's MuJoCo locomotion tasks (Hopper, Walker2d, HalfCheetah, Ant, Humanoid v5) with a success flag.

Locomotion has no goal to reach, so success is defined per episode: the robot stayed healthy for the
whole horizon (never ``terminated``) and its return reached a fixed per-task threshold (set in the
registry, ``envs/registry.py``). ``info["is_success"]`` is False on every step until the last one,
where it holds that verdict.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from envs._physics import get_physics_state, physics_state_size, set_physics_state, state_vector, use_fast_rendering


class LocomotionTask(gymnasium.Wrapper):
    r"""A gymnasium locomotion env with its own horizon and an episode-level ``is_success``.

    ## Action, Observation, Reward, Starting state
    Unchanged from the gymnasium ``*-v5`` env (see its docstring); observations are float64 there.

    ## Success
    ``info["is_success"]`` is on every step and in the reset info. It is False until the episode
    ends; on the step that truncates the episode at ``horizon`` it is True iff the return so far
    is at least ``success_return``. An episode that ends ``terminated`` (unhealthy) is never a
    success. ``info["episode_return"]`` carries the running return.

    ## Episode end
    ``terminated`` as in gymnasium (unhealthy states for Hopper, Walker2d, Ant, Humanoid; never for
    HalfCheetah). ``truncated`` after ``horizon`` steps (default 1000, gymnasium's own limit),
    counted in this wrapper: the inner env has no ``TimeLimit``.
    """

    def __init__(self, env: gymnasium.Env, success_return: float, horizon: int = 1000) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        super().__init__(env)
        self.success_return = success_return
        self.horizon = horizon
        self._elapsed_steps = 0
        self._episode_return = 0.0
        use_fast_rendering(env.unwrapped.model)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._elapsed_steps = 0
        self._episode_return = 0.0
        return obs, {**info, "is_success": False, "episode_return": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._elapsed_steps += 1
        self._episode_return += float(reward)
        truncated = bool(truncated) or self._elapsed_steps >= self.horizon
        is_success = truncated and not terminated and self._episode_return >= self.success_return
        info = {**info, "is_success": bool(is_success), "episode_return": self._episode_return}
        return obs, float(reward), bool(terminated), truncated, info

    # -- replayable state -----------------------------------------------------------------------

    def get_state(self) -> np.ndarray:
        """``[elapsed_steps, episode_return, *mujoco_integration_state]``."""
        unwrapped = self.env.unwrapped
        physics = get_physics_state(unwrapped.model, unwrapped.data)
        return np.concatenate([[float(self._elapsed_steps), self._episode_return], physics])

    def set_state(self, state: np.ndarray) -> np.ndarray:
        """Restore a vector from :meth:`get_state` and return the observation there."""
        unwrapped = self.env.unwrapped
        state = state_vector(state, 2 + physics_state_size(unwrapped.model), "locomotion",
                             "pass a vector returned by get_state() of the same task")
        set_physics_state(unwrapped.model, unwrapped.data, state[2:])
        self._elapsed_steps = int(state[0])
        self._episode_return = float(state[1])
        return unwrapped._get_obs()  # the gymnasium v5 envs' observation function


def make_locomotion_env(
    task: str,
    success_return: float,
    horizon: int = 1000,
    render_mode: str | None = None,
    width: int = 240,
    height: int = 240,
    **kwargs: Any,
) -> LocomotionTask:
    """Build gymnasium's ``task`` (e.g. ``"Hopper-v5"``) without ``TimeLimit``, wrapped in :class:`LocomotionTask`.

    Extra keyword arguments (e.g. ``ctrl_cost_weight``) go to the gymnasium env's constructor.
    """
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    env_classes = {
        "Hopper-v5": HopperEnv,
        "Walker2d-v5": Walker2dEnv,
        "HalfCheetah-v5": HalfCheetahEnv,
        "Ant-v5": AntEnv,
        "Humanoid-v5": HumanoidEnv,
    }
    env = env_classes[task](render_mode=render_mode, width=width, height=height, **kwargs)
    return LocomotionTask(env, success_return=success_return, horizon=horizon)
