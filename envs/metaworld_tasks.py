"""MetaWorld tasks (``metaworld`` 3.1.1: a Sawyer arm, one task per env), for behavior cloning.

Optional: needs the ``metaworld`` extra (``pip install 'dopr-robot[metaworld]'``). Nothing here imports
metaworld until an env or expert is built, so ``envs`` imports without it.

Goals are drawn the MT1 way, from the reset seed: MT1 draws each task's object and goal positions
(its ``rand_vec``) uniformly from the env's ``_random_reset_space``, redrawing where the task's reset
rejects a draw, and fixes 50 of them with ``set_task``. Here the same draw is made on every seeded
reset with the env's own generator seeded by the reset seed, so ``reset(seed=S)`` alone determines
the episode (episode ``i`` of an evaluation starts from ``S + i``) and no task list is needed.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces

from envs._physics import (
    PHYSICS_STATE_SPEC, get_physics_state, physics_state_size, set_physics_state, state_vector, use_fast_rendering,
)
from envs.cameras import CameraRenderer, camera_space
from envs.experts.base import as_batch, unbatch

# MetaWorld name -> horizon, for every v3 task whose scripted expert succeeds in at least 18 of 20
# seeded episodes (seeds 10000-10019, metaworld 3.1.1): all but soccer-v3 (15/20) and sweep-into-v3
# (16/20). A horizon is 1.5x the expert's slowest first success there, rounded up to a multiple of 50,
# at most MetaWorld's own limit of 500 (which, used for all, would make most evaluations 2-5x longer
# for nothing: success is latched, see MetaWorldTask). make(name, horizon=N) overrides.
METAWORLD_TASKS: dict[str, int] = {
    "assembly-v3": 150, "basketball-v3": 200, "bin-picking-v3": 400, "box-close-v3": 250,
    "button-press-topdown-v3": 150, "button-press-topdown-wall-v3": 100, "button-press-v3": 100,
    "button-press-wall-v3": 150, "coffee-button-v3": 100, "coffee-pull-v3": 150, "coffee-push-v3": 100,
    "dial-turn-v3": 200, "disassemble-v3": 400, "door-close-v3": 150, "door-lock-v3": 200, "door-open-v3": 200,
    "door-unlock-v3": 100, "drawer-close-v3": 150, "drawer-open-v3": 150, "faucet-close-v3": 150,
    "faucet-open-v3": 100, "hammer-v3": 150, "hand-insert-v3": 150, "handle-press-side-v3": 100,
    "handle-press-v3": 100, "handle-pull-side-v3": 200, "handle-pull-v3": 200, "lever-pull-v3": 200,
    "peg-insert-side-v3": 250, "peg-unplug-side-v3": 250, "pick-out-of-hole-v3": 200, "pick-place-v3": 100,
    "pick-place-wall-v3": 250, "plate-slide-back-side-v3": 100, "plate-slide-back-v3": 150,
    "plate-slide-side-v3": 100, "plate-slide-v3": 100, "push-back-v3": 500, "push-v3": 150, "push-wall-v3": 150,
    "reach-v3": 100, "reach-wall-v3": 100, "shelf-place-v3": 200, "stick-pull-v3": 500, "stick-push-v3": 150,
    "sweep-v3": 200, "window-close-v3": 150, "window-open-v3": 150,
}
REGISTRY_PREFIX = "MW-"
OBS_DIM, ACT_DIM = 39, 4
# The 39 entries: this frame (hand xyz, gripper opening, up to two objects' position + quaternion,
# zero-padded to 14), the previous frame (the same 18), then the goal position.
METAWORLD_OBS_KEYS: dict[str, slice] = {
    "robot_state": slice(0, 4), "object": slice(4, 18), "previous": slice(18, 36), "goal": slice(36, 39),
}
_FRAME = 18
# Cameras of MetaWorld's own scene, under its names. Its corner cameras see the scene upside down;
# they are turned half a turn about their view axis (the same view, upright).
METAWORLD_CAMERAS = ("corner", "corner2", "topview", "gripperPOV")
_UPSIDE_DOWN = ("corner", "corner2")


def registry_name(env_name: str) -> str:
    """The registry's name of MetaWorld task ``env_name`` (``push-v3`` -> ``MW-push-v3``; a valid file name)."""
    return f"{REGISTRY_PREFIX}{env_name}"


class MetaWorldTask(gymnasium.Wrapper):
    r"""A MetaWorld env with seeded goals, a float32 observation, latched success and replayable state.

    ## Action
    ``Box(-1, 1, (4,), float32)``: hand displacement dx, dy, dz (times 1 cm per step, through a
    mocap weld) and gripper effort (close > 0); clipped to the box.

    ## Observation
    ``Box(-inf, inf, (39,), float32)``, MetaWorld's goal-observable vector (MT1's): named parts
    :data:`METAWORLD_OBS_KEYS` ``robot_state`` (hand xyz + gripper opening), ``object``,
    ``previous`` (the previous frame's 18) and ``goal``. With ``cameras`` (from
    :data:`METAWORLD_CAMERAS`) a ``Dict`` of ``flat``, these parts and ``<camera>_image`` uint8
    ``(H, W, 3)`` at ``image_size`` (width, height).

    ## Reward
    Unchanged: MetaWorld's v2 shaped reward in [0, 10]; its terms stay in ``info``.

    ## Success
    MetaWorld judges success at any step (``info["success"]``, kept as it is); the toolkit judges
    ``info["is_success"]`` on an episode's final step. ``is_success`` is therefore latched: False at
    reset, True from the first step where ``info["success"]`` is 1 to the end of the episode, so the
    toolkit's success rate is MetaWorld's (success reached within the horizon).

    ## Starting state
    MetaWorld's reset with the object and goal positions drawn from ``reset(seed=...)`` (see the
    module docstring). An unseeded reset continues the last seeded stream.

    ## Episode end
    Never ``terminated``; ``truncated`` after ``horizon`` steps.
    """

    def __init__(self, env: gymnasium.Env, horizon: int, cameras: tuple[str, ...] = (),
                 image_size: tuple[int, int] = (64, 64)) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        super().__init__(env)
        # Goal observable and a fresh goal per reset drawn from the env's seeded generator: what
        # MetaWorld's MT1 task sampling does with the global NumPy generator, minus the frozen list.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # a cached property of the observability
        env._set_task_called, env._freeze_rand_vec, env.seeded_rand_vec = True, False, True
        # The horizon is counted here; MetaWorld's own limit (500) raises on any step past it.
        env.max_path_length = np.iinfo(np.int64).max
        self.horizon = horizon
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(ACT_DIM,), dtype=np.float32)
        self._elapsed_steps, self._succeeded = 0, False
        self._previous_frame = np.zeros(_FRAME)  # the frame the last observation showed as previous
        use_fast_rendering(env.unwrapped.model)
        _turn_upright(env.unwrapped.model)
        self._cameras: CameraRenderer | None = None
        if cameras:
            low_dim = {key: len(range(OBS_DIM)[part]) for key, part in METAWORLD_OBS_KEYS.items()}
            self.observation_space = camera_space(self.observation_space, low_dim, cameras, image_size)
            self._cameras = CameraRenderer(env.unwrapped.model, cameras, image_size)

    def _observe(self, obs: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        self._previous_frame = np.array(obs[_FRAME:2 * _FRAME], dtype=np.float64)
        flat = np.asarray(obs, dtype=np.float32)
        if self._cameras is None:
            return flat
        parts = {key: flat[part] for key, part in METAWORLD_OBS_KEYS.items()}
        return {"flat": flat} | parts | self._cameras.render(self.env.unwrapped.data)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray | dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self.env.unwrapped.seed(seed)  # MetaWorld's reset ignores its seed argument
        obs, info = self.env.reset()
        self._elapsed_steps, self._succeeded = 0, False
        return self._observe(obs), {**info, "is_success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray | dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, reward, _, _, info = self.env.step(action)
        self._elapsed_steps += 1
        self._succeeded = self._succeeded or bool(info["success"])
        truncated = self._elapsed_steps >= self.horizon
        return self._observe(obs), float(reward), False, truncated, {**info, "is_success": self._succeeded}

    def close(self) -> None:
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None
        super().close()

    # -- replayable state -----------------------------------------------------------------------

    @property
    def _goal_size(self) -> int:
        return self.env.unwrapped._random_reset_space.low.size

    def get_state(self) -> np.ndarray:
        """``[elapsed_steps, succeeded, rand_vec (object and goal draw), previous frame (18), *mujoco_state]``."""
        unwrapped = self.env.unwrapped
        return np.concatenate([
            [float(self._elapsed_steps), float(self._succeeded)], np.asarray(unwrapped._last_rand_vec, np.float64),
            self._previous_frame, get_physics_state(unwrapped.model, unwrapped.data),
        ])

    def set_state(self, state: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """Restore a vector from :meth:`get_state` and return the observation there; the next steps replay exactly.

        The task's reset runs again with the saved draw (it sets the goal and the per-episode values
        MetaWorld's reward reads, such as the object's initial position); the physics state then
        replaces what that reset simulated.
        """
        unwrapped = self.env.unwrapped
        goal_size = self._goal_size
        state = state_vector(state, 2 + goal_size + _FRAME + physics_state_size(unwrapped.model), "MetaWorld",
                             "pass a vector returned by get_state() of the same task")
        unwrapped._last_rand_vec, unwrapped._freeze_rand_vec = state[2:2 + goal_size].copy(), True
        try:
            mujoco.mj_resetData(unwrapped.model, unwrapped.data)  # as a reset does: some tasks read the scene
            unwrapped.reset_model()
        finally:
            unwrapped._freeze_rand_vec = False
        physics = state[2 + goal_size + _FRAME:]
        set_physics_state(unwrapped.model, unwrapped.data, physics)
        # mujoco 3.3's mj_forward (inside set_physics_state) also rewrites the solver's warm start, and
        # the replay drifted by ~1e-11 from it; setting the state once more restores it, nothing derived.
        mujoco.mj_setState(unwrapped.model, unwrapped.data, physics, PHYSICS_STATE_SPEC)
        for site in unwrapped._target_site_config:  # as MetaWorld's step does: goal markers where the goal is
            unwrapped._set_pos_site(*site)
        self._elapsed_steps, self._succeeded = int(state[0]), bool(state[1])
        unwrapped.curr_path_length = self._elapsed_steps
        unwrapped._prev_obs = state[2 + goal_size:2 + goal_size + _FRAME].copy()
        return self._observe(unwrapped._get_obs())


def _turn_upright(model: mujoco.MjModel) -> None:
    """Turn :data:`_UPSIDE_DOWN` cameras half a turn about their view axis (their local z)."""
    for camera in _UPSIDE_DOWN:
        index = model.camera(camera).id
        turned = np.zeros(4)
        mujoco.mju_mulQuat(turned, model.cam_quat[index].copy(), np.array([0.0, 0.0, 0.0, 1.0]))
        model.cam_quat[index] = turned


def make_metaworld_env(env_name: str, horizon: int | None = None, render_mode: str | None = None,
                       width: int = 240, height: int = 240, cameras: tuple[str, ...] = (),
                       image_size: tuple[int, int] = (64, 64)) -> MetaWorldTask:
    """Build MetaWorld task ``env_name`` (e.g. ``"push-v3"``) wrapped in :class:`MetaWorldTask`.

    ``horizon`` defaults to the task's in :data:`METAWORLD_TASKS`; ``render_mode``/``width``/``height``
    go to MetaWorld's env (``render()`` views its ``corner`` camera).
    """
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    env = ALL_V3_ENVIRONMENTS[env_name](render_mode=render_mode, width=width, height=height,
                                         camera_name="corner" if render_mode else None)
    return MetaWorldTask(env, METAWORLD_TASKS[env_name] if horizon is None else horizon, tuple(cameras),
                         tuple(image_size))


class MetaWorldExpert:
    """MetaWorld's scripted policy for a task (``metaworld.policies``), on the flat 39-dim observation.

    The policies are functions of the observation alone, so rows of a batch are independent; each
    action is clipped to the action box (the scripts' gains can ask for more).
    """

    def __init__(self, env_name: str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.env_name = env_name
        self.policy = ENV_POLICY_MAP[env_name]()

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(4,)`` or ``(N, 4)`` for observations ``(39,)`` or ``(N, 39)``."""
        batch, single = as_batch(obs, OBS_DIM)
        with warnings.catch_warnings():
            # metaworld.policies warns whenever a gain asks for more than the box; clipping is intended.
            warnings.simplefilter("ignore", UserWarning)
            actions = np.stack([self.policy.get_action(row) for row in batch])
        return unbatch(np.clip(actions, -1.0, 1.0), single)
