"""Shared base of Reach-v0 and Push-v0: a MuJoCo task that brings something within a distance of a goal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco import MujocoEnv

from envs.cameras import CameraRenderer, camera_space
from envs._physics import get_physics_state, physics_state_size, set_physics_state, state_vector, use_fast_rendering


class GoalTaskEnv(MujocoEnv, utils.EzPickle):
    """Constructor, step bookkeeping and replayable state common to the goal-reaching tasks.

    ``step`` clips the action to [-1, 1], simulates ``frame_skip`` substeps, counts the step, and
    returns the reward terms of :meth:`_task_rewards` plus ``reward_control`` (all in ``info``).
    ``is_success`` is ``_distance() < success_distance``; ``truncated`` after ``horizon`` steps.

    A subclass keeps its own ``__init__`` signature and defaults and supplies ``_flat_obs``,
    ``_distance``, ``_task_rewards`` and ``reset_model`` (which must zero ``_elapsed_steps``), and
    names the parts of its flat observation in :attr:`OBS_KEYS` (in order; together they are the
    whole vector) and its cameras in :attr:`CAMERAS`.

    Made with ``cameras`` (names from :attr:`CAMERAS`), the observation is a ``Dict``
    (:func:`envs.cameras.camera_space`): ``flat``, the :attr:`OBS_KEYS` parts, and one uint8 image
    per camera at ``image_size`` (width, height), rendered after every reset, step and
    :meth:`set_state`. Without cameras it is the flat vector, as before.
    """

    OBS_KEYS: dict[str, slice] = {}
    CAMERAS: tuple[str, ...] = ()

    # render_fps is set per instance from dt (it depends on frame_skip).
    metadata = {"render_modes": ["rgb_array", "depth_array", "rgbd_tuple"]}

    def __init__(
        self,
        asset_path: Path,
        obs_size: int,
        horizon: int,
        success_distance: float,
        ctrl_cost_weight: float,
        terminate_on_success: bool,
        frame_skip: int,
        render_mode: str | None,
        width: int,
        height: int,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (64, 64),
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if success_distance <= 0:
            raise ValueError(f"success_distance must be > 0, got {success_distance}")
        # Pickling rebuilds the subclass from these, in the order of its own __init__.
        utils.EzPickle.__init__(
            self, horizon, success_distance, ctrl_cost_weight, terminate_on_success, frame_skip,
            render_mode, width, height, tuple(cameras), tuple(image_size),
        )
        self.horizon = horizon
        self.success_distance = success_distance
        self.ctrl_cost_weight = ctrl_cost_weight
        self.terminate_on_success = terminate_on_success
        self._elapsed_steps = 0
        self._cameras: CameraRenderer | None = None

        MujocoEnv.__init__(
            self,
            str(asset_path),
            frame_skip,
            observation_space=spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float32),
            render_mode=render_mode,
            width=width,
            height=height,
            camera_name="fixed",
        )
        use_fast_rendering(self.model)
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}
        if cameras:
            flat = self.observation_space
            low_dim = {key: len(range(obs_size)[part]) for key, part in self.OBS_KEYS.items()}
            self.observation_space = camera_space(flat, low_dim, cameras, tuple(image_size))
            self._cameras = CameraRenderer(self.model, cameras, tuple(image_size))

    def _flat_obs(self) -> np.ndarray:
        """The flat state observation (float32); the experts act on it."""
        raise NotImplementedError

    def _get_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        flat = self._flat_obs()
        if self._cameras is None:
            return flat
        parts = {"flat": flat} | {key: flat[part] for key, part in self.OBS_KEYS.items()}
        return parts | self._cameras.render(self.data)

    def close(self) -> None:
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None
        super().close()

    # -- supplied by each task ------------------------------------------------------------------

    def _distance(self) -> float:
        """Distance (m) from what must reach the goal to the goal; success is below ``success_distance``."""
        raise NotImplementedError

    def _task_rewards(self, info: dict[str, Any]) -> dict[str, float]:
        """The task's reward terms by ``info`` key, in order; ``reward_control`` is added after them."""
        raise NotImplementedError

    # -- success, gymnasium API -----------------------------------------------------------------

    def _get_info(self) -> dict[str, Any]:
        distance = self._distance()
        return {"distance": distance, "is_success": bool(distance < self.success_distance)}

    def _get_reset_info(self) -> dict[str, Any]:
        return self._get_info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.do_simulation(action, self.frame_skip)
        self._elapsed_steps += 1

        info = self._get_info()
        rewards = self._task_rewards(info)
        rewards["reward_control"] = -self.ctrl_cost_weight * float(np.sum(np.square(action)))
        info.update(rewards)
        terminated = self.terminate_on_success and info["is_success"]
        truncated = self._elapsed_steps >= self.horizon
        return self._get_obs(), sum(rewards.values()), terminated, truncated, info

    # -- replayable state -----------------------------------------------------------------------

    @property
    def state_size(self) -> int:
        """Length of the :meth:`get_state` vector."""
        return 1 + physics_state_size(self.model)

    def get_state(self) -> np.ndarray:
        """Everything needed to replay from here: ``[elapsed_steps, *mujoco_integration_state]``.

        The MuJoCo part includes qpos, qvel, the solver warm start and the goal (a mocap body), so
        a restored state steps bitwise identically to the original.
        """
        return np.concatenate([[float(self._elapsed_steps)], get_physics_state(self.model, self.data)])

    def set_state(self, state: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Restore a vector from :meth:`get_state` and return the observation there.

        Replaces ``MujocoEnv.set_state(qpos, qvel)``, which :meth:`reset_model` still uses.
        """
        name = type(self).__name__
        state = state_vector(state, self.state_size, name.removesuffix("Env"),
                             f"pass a vector returned by {name}.get_state()")
        set_physics_state(self.model, self.data, state[1:])
        self._elapsed_steps = int(state[0])
        return self._get_obs()
