"""Fetch tasks of gymnasium-robotics (FetchReach/Push/PickAndPlace-v4), flattened for behavior cloning.

Optional: needs the ``fetch`` extra (``pip install 'dopr-robot[fetch]'``, i.e. gymnasium-robotics).
Nothing here imports gymnasium_robotics until an env is built, so ``envs`` imports without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from envs.cameras import CameraRenderer, camera_space, look_at
from envs._physics import get_physics_state, physics_state_size, set_physics_state, state_vector, use_fast_rendering

# Named parts of the flat observation (see FetchTask): the gripper's own state is not contiguous in
# gymnasium-robotics' vector (grip_pos 0-2, gripper_state 9-10, grip_velp 20-22, gripper_vel 23-24).
_REACH_PARTS = {"robot_state": slice(0, 10), "achieved_goal": slice(10, 13), "goal": slice(13, 16)}
_OBJECT_PARTS = {
    "robot_state": np.array([0, 1, 2, 9, 10, 20, 21, 22, 23, 24]),
    "object": np.array([*range(3, 9), *range(11, 20)]),  # position, relative to the gripper, rotation, velocities
    "achieved_goal": slice(25, 28),
    "goal": slice(28, 31),
}
FETCH_OBS_KEYS: dict[str, dict[str, Any]] = {
    "FetchReach-v4": _REACH_PARTS, "FetchPush-v4": _OBJECT_PARTS, "FetchPickAndPlace-v4": _OBJECT_PARTS,
}
FETCH_CAMERAS = ("agentview",)
# "agentview" is the model's spare external camera, moved to face the robot across the table from
# above, so gripper, object and goal (drawn where the goal is) read at 64 x 64.
_AGENTVIEW = {"camera": "external_camera_0", "position": (1.95, 0.75, 1.25), "target": (1.3, 0.75, 0.42), "fovy": 45.0}


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

    Named parts (:data:`FETCH_OBS_KEYS`): ``robot_state`` (gripper position, fingers and their
    velocities), ``object`` (Push/PickAndPlace), ``achieved_goal``, ``goal``. With
    ``cameras=("agentview",)`` the observation is a ``Dict`` of ``flat``, these parts and
    ``agentview_image`` uint8 ``(H, W, 3)`` at ``image_size`` (width, height), the goal drawn in it.

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

    def __init__(self, env: gymnasium.Env, horizon: int = 50, parts: dict[str, Any] | None = None,
                 cameras: tuple[str, ...] = (), image_size: tuple[int, int] = (64, 64)) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        super().__init__(env)
        dict_space = env.observation_space
        size = sum(dict_space[key].shape[0] for key in ("observation", "achieved_goal", "desired_goal"))
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self.horizon = horizon
        self._elapsed_steps = 0
        model = env.unwrapped.model
        use_fast_rendering(model)
        self._parts, self._cameras = dict(parts or {}), None
        if cameras:
            low_dim = {key: len(range(size)[part]) if isinstance(part, slice) else len(part)
                       for key, part in self._parts.items()}
            self.observation_space = camera_space(self.observation_space, low_dim, cameras, image_size)
            look_at(model, _AGENTVIEW["camera"], _AGENTVIEW["position"], _AGENTVIEW["target"], _AGENTVIEW["fovy"])
            self._cameras = CameraRenderer(model, cameras, image_size, {"agentview": _AGENTVIEW["camera"]})
            self._target = model.site("target0").id

    def _observe(self, obs: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        flat = self.flatten(obs)
        if self._cameras is None:
            return flat
        unwrapped = self.env.unwrapped
        # Draw the goal marker at the goal, as gymnasium-robotics' render() does, but in the derived
        # site position only (no mj_forward): the simulation is left exactly as it was.
        unwrapped.data.site_xpos[self._target] = unwrapped.goal
        images = self._cameras.render(unwrapped.data)
        return {"flat": flat} | {key: flat[part] for key, part in self._parts.items()} | images

    def close(self) -> None:
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None
        super().close()

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
        return self._observe(obs), {**info, "is_success": self._is_success(obs)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._elapsed_steps += 1
        info = {**info, "is_success": bool(info["is_success"])}
        truncated = bool(truncated) or self._elapsed_steps >= self.horizon
        return self._observe(obs), float(reward), bool(terminated), truncated, info

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
        return self._observe(unwrapped._get_obs())


def make_fetch_env(
    task: str,
    horizon: int = 50,
    render_mode: str | None = None,
    width: int = 240,
    height: int = 240,
    cameras: tuple[str, ...] = (),
    image_size: tuple[int, int] = (64, 64),
    **kwargs: Any,
) -> FetchTask:
    """Build ``task`` (a gymnasium-robotics id such as ``"FetchPush-v4"``) wrapped in :class:`FetchTask`.

    Extra keyword arguments (e.g. ``reward_type="dense"``) go to the gymnasium-robotics env;
    ``cameras``/``image_size`` make the observation a ``Dict`` with images (see :class:`FetchTask`).
    """
    # The registry's make() checks the extra first (TaskEntry.extra) and names the install command.
    from gymnasium_robotics.envs.fetch import pick_and_place, push, reach

    env_classes = {
        "FetchReach-v4": reach.MujocoFetchReachEnv,
        "FetchPush-v4": push.MujocoFetchPushEnv,
        "FetchPickAndPlace-v4": pick_and_place.MujocoFetchPickAndPlaceEnv,
    }
    env = env_classes[task](render_mode=render_mode, width=width, height=height, **kwargs)
    return FetchTask(env, horizon=horizon, parts=FETCH_OBS_KEYS[task], cameras=tuple(cameras),
                     image_size=tuple(image_size))
