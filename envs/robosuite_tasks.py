"""robosuite tasks as robomimic uses them: Lift, PickPlaceCan, NutAssemblySquare, ToolHang, TwoArmTransport.

Optional: needs robosuite 1.5.2, which runs on mujoco 3.3.0 and not on 3.11 (it reads ``MjData.qM``,
which 3.11 removed). Nothing here imports robosuite until an env is built, so ``envs`` imports without it.

The names, observation keys, cameras, horizons and controller are robomimic's, so a policy trained
on a robomimic dataset is evaluated here in closed loop: :func:`make_robosuite_env` takes the
``env_kwargs`` of the dataset's ``env_args`` as they are (a controller config of robosuite <= 1.4.1
is converted, :func:`convert_controller_config`) and renders the policy's cameras at its image size.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces

from dopr_robot.errors import UserError
from envs._physics import PHYSICS_STATE_SPEC, get_physics_state, physics_state_size, set_physics_state, state_vector
from envs.cameras import CameraRenderer, camera_space, is_image_key

ROBOSUITE_MISSING_REASON = "robosuite is not installed (pip install robosuite==1.5.2; it runs on mujoco 3.3.0)"
NO_EXPERT_REASON = "no expert: for datasets"
ROBOMIMIC_ROBOSUITE_TYPE = 1  # robomimic's EnvType for robosuite, the "type" of a dataset's env_args
ARM_ACTION_DIM = 7  # OSC_POSE: 3 position and 3 rotation deltas, then the gripper (-1 open, +1 closed)
CONTROL_FREQ = 20  # Hz, robomimic's datasets


@dataclass(frozen=True)
class RobosuiteTaskInfo:
    """What the registry reports about one robosuite task without building it."""

    robots: tuple[str, ...]
    horizon: int  # robomimic's rollout horizon for the task
    object_dim: int  # size of robosuite's object-state, robomimic's "object" key
    cameras: tuple[str, ...]  # robomimic's image datasets' cameras
    success: str  # what the task's _check_success() tests


ROBOSUITE_TASKS: dict[str, RobosuiteTaskInfo] = {
    "Lift": RobosuiteTaskInfo(("Panda",), 400, 10, ("agentview", "robot0_eye_in_hand"),
                              "cube more than 4 cm above the table"),
    "PickPlaceCan": RobosuiteTaskInfo(("Panda",), 400, 14, ("agentview", "robot0_eye_in_hand"),
                                      "can in its bin"),
    "NutAssemblySquare": RobosuiteTaskInfo(("Panda",), 400, 14, ("agentview", "robot0_eye_in_hand"),
                                           "square nut on its peg"),
    "ToolHang": RobosuiteTaskInfo(("Panda",), 700, 44, ("sideview", "robot0_eye_in_hand"),
                                  "frame assembled into the stand and the tool hung on it"),
    "TwoArmTransport": RobosuiteTaskInfo(
        ("Panda", "Panda"), 700, 41, ("shouldercamera0", "shouldercamera1", "robot0_eye_in_hand", "robot1_eye_in_hand"),
        "payload in the target bin and trash in the trash bin"),
}


def robosuite_installed() -> bool:
    """Whether robosuite can be imported (checked without importing it)."""
    return importlib.util.find_spec("robosuite") is not None


def flat_parts(task: str) -> dict[str, slice]:
    """robomimic's low-dimensional keys in the flat state, in order: per robot ``robot<i>_eef_pos`` (3),
    ``robot<i>_eef_quat`` (4, x y z w), ``robot<i>_gripper_qpos`` (2), then ``object`` (robosuite's object-state)."""
    info, parts, start = ROBOSUITE_TASKS[task], {}, 0
    sizes = [(f"robot{i}_{key}", size) for i in range(len(info.robots))
             for key, size in (("eef_pos", 3), ("eef_quat", 4), ("gripper_qpos", 2))]
    for key, size in [*sizes, ("object", info.object_dim)]:
        parts[key] = slice(start, start + size)
        start += size
    return parts


def obs_dim(task: str) -> int:
    return list(flat_parts(task).values())[-1].stop


def act_dim(task: str) -> int:
    return ARM_ACTION_DIM * len(ROBOSUITE_TASKS[task].robots)


def success_criterion(task: str) -> str:
    return (f"{ROBOSUITE_TASKS[task].success} (robosuite's _check_success) at any step: the episode ends on the "
            "first success step, as robomimic's rollouts do, so it is also the final step")


def unknown_env_reason(env_name: str) -> str:
    """Why the robosuite env ``env_name`` that a dataset's env_args name is not evaluated here."""
    ours = ", ".join(ROBOSUITE_TASKS)
    if not robosuite_installed():
        return f"{ROBOSUITE_MISSING_REASON}; its tasks here: {ours}"
    import robosuite

    if env_name in robosuite.ALL_ENVIRONMENTS:
        return (f"robosuite has it, but it is not one of the toolkit's robosuite tasks ({ours}), whose observation "
                "keys, cameras and horizons it knows")
    return (f"robosuite {robosuite.__version__} has no env of that name (made with a fork or another version of "
            f"robosuite?); the toolkit's robosuite tasks: {ours}")


def no_expert(task: str) -> None:
    """The expert factory of tasks evaluated only from datasets."""
    raise UserError(f"task {task} has {NO_EXPERT_REASON}: evaluate a policy on it with --no-expert")


def convert_controller_config(config: dict[str, Any], robots: Sequence[str]) -> dict[str, Any]:
    """A controller config as robosuite 1.5 takes it: one of robosuite <= 1.4.1 (a single part such as
    ``{"type": "OSC_POSE", ...}``, what robomimic datasets carry) becomes a composite config with
    robosuite's ``refactor_composite_controller_config``, after renaming the arguments 1.5 renamed
    (``damping`` -> ``damping_ratio``, ``control_delta`` -> ``input_type``); its deltas stay in the
    world frame, as 1.4 applied them (1.5's default frame is the robot base). Others pass unchanged."""
    from robosuite.controllers.composite.composite_controller_factory import (
        is_part_controller_config,
        refactor_composite_controller_config,
    )

    if not isinstance(config, dict) or not is_part_controller_config(config):
        return config
    part = dict(config)
    for old, new in (("damping", "damping_ratio"), ("damping_limits", "damping_ratio_limits")):
        if old in part:
            part.setdefault(new, part.pop(old))
    if "control_delta" in part:
        part.setdefault("input_type", "delta" if part.pop("control_delta") else "absolute")
    part.setdefault("input_ref_frame", "world")
    arms = ["right", "left"] if robots[0] in ("Baxter",) else ["right"]
    return refactor_composite_controller_config(part, robots[0], arms)


# Arguments the wrapper decides (cameras, rendering, episode end) whatever the dataset's env_kwargs say.
_RENDERING = ("has_renderer", "has_offscreen_renderer", "use_camera_obs", "camera_names", "camera_heights",
              "camera_widths", "camera_depths", "render_gpu_device_id", "ignore_done")


def robosuite_kwargs(task: str, kwargs: dict[str, Any], cameras: Sequence[str],
                     image_size: tuple[int, int]) -> dict[str, Any]:
    """The ``suite.make`` arguments for ``task``: robomimic's defaults, overridden by ``kwargs`` (a
    dataset's env_kwargs), with the cameras and rendering this wrapper needs."""
    info = ROBOSUITE_TASKS.get(task)
    made = {"robots": list(info.robots) if info else ["Panda"], "control_freq": CONTROL_FREQ, "reward_shaping": False,
            "use_object_obs": True, "hard_reset": False, "seed": 0}
    made |= {key: value for key, value in kwargs.items() if key not in _RENDERING}
    robots = [made["robots"]] if isinstance(made["robots"], str) else list(made["robots"])
    config = made.get("controller_configs")
    if config is not None:
        made["controller_configs"] = convert_controller_config(config, robots)
        if config is not made["controller_configs"]:  # robosuite <= 1.4 stepped the full physics each substep
            made.setdefault("lite_physics", False)
    width, height = image_size
    made |= {"has_renderer": False, "has_offscreen_renderer": bool(cameras), "use_camera_obs": bool(cameras),
             "ignore_done": True, "render_gpu_device_id": -1}
    if cameras:
        made |= {"camera_names": list(cameras), "camera_heights": height, "camera_widths": width,
                 "camera_depths": False}
    return made


def build_robosuite(task: str, kwargs: dict[str, Any]) -> Any:
    """``robosuite.make(task, **kwargs)``; anything robosuite cannot build is one UserError line naming the env."""
    if not robosuite_installed():
        raise UserError(f"task {task} is unavailable: {ROBOSUITE_MISSING_REASON}")
    if not hasattr(mujoco.MjData, "qM"):
        raise UserError(f"task {task} is unavailable: robosuite reads MjData.qM, which mujoco {mujoco.__version__} "
                        "no longer has; robosuite 1.5.2 runs on mujoco 3.3.0")
    import robosuite

    # robosuite logs a line per env built (which controller file it loaded): an evaluation builds
    # several, and its users need robosuite's warnings only.
    logging.getLogger("robosuite_logs").setLevel(logging.WARNING)
    if task not in robosuite.ALL_ENVIRONMENTS:
        raise UserError(f"robosuite has no env {task!r} (it has {', '.join(sorted(robosuite.ALL_ENVIRONMENTS))})")
    try:
        return robosuite.make(task, **kwargs)
    except Exception as err:  # robosuite raises anything from bad kwargs (TypeError, AssertionError, KeyError, ...)
        raise UserError(f"robosuite cannot build {task} with these env_kwargs: {type(err).__name__}: {err}") from None


class RobosuiteTask(gymnasium.Env):
    r"""A robosuite env the gymnasium way, with robomimic's observation keys.

    ## Action
    ``Box(-1, 1, (7 * robots,), float32)`` with the OSC_POSE controller (robomimic's): per arm
    position delta (times 5 cm), rotation delta (axis-angle, times 0.5 rad), gripper (-1 open, +1 close).

    ## Observation
    A ``Dict``: ``flat`` ``(D,)`` float32, the concatenation of :func:`flat_parts` (robomimic's
    ``robot0_eef_pos``, ``robot0_eef_quat``, ``robot0_gripper_qpos``, ``object``); every other
    low-dimensional observable of robosuite under its name (``robot0_joint_pos``, ``cube_pos``, ...;
    its ``object-state`` is ``object``); with ``cameras`` each ``<camera>_image`` uint8 ``(H, W, 3)``
    at ``image_size`` (width, height), top row first as robomimic stores them, rendered by robosuite.

    ## Reward
    robosuite's (sparse unless ``reward_shaping=True``).

    ## Success
    ``info["is_success"]``: the task's ``_check_success()`` has held at some step of the episode.
    With ``terminate_on_success`` (default, robomimic's rollouts) the episode ends there.

    ## Starting state
    robosuite's randomized placement and joint noise, drawn from its generator, which
    ``reset(seed=s)`` reseeds: the same seed gives the same initial state in any instance.

    ## Episode end
    ``terminated`` on the first success step (``terminate_on_success``); ``truncated`` after
    ``horizon`` steps (robomimic's rollout horizon by default).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(self, task: str, horizon: int | None = None, cameras: Sequence[str] = (),
                 image_size: Sequence[int] = (64, 64), terminate_on_success: bool = True,
                 render_mode: str | None = None, width: int = 256, height: int = 256,
                 render_camera: str | None = None, **kwargs: Any) -> None:
        info = ROBOSUITE_TASKS.get(task)
        self.horizon = int(horizon if horizon is not None else (info.horizon if info else 500))
        if self.horizon < 1:
            raise UserError(f"horizon must be >= 1, got {self.horizon}")
        self.task, self.cameras, self.image_size = task, tuple(cameras), (int(image_size[0]), int(image_size[1]))
        self.terminate_on_success, self.render_mode = terminate_on_success, render_mode
        self._env = build_robosuite(task, robosuite_kwargs(task, kwargs, self.cameras, self.image_size))
        self._model, self._data = self._env.sim.model._model, self._env.sim.data._data
        self._parts = flat_parts(task) if task in ROBOSUITE_TASKS else {}
        self._elapsed_steps, self._succeeded = 0, False
        first = self._observe(self._env.reset())
        low_dim = {key: value.shape[0] for key, value in first.items() if key != "flat" and not is_image_key(key)}
        flat = spaces.Box(-np.inf, np.inf, shape=first["flat"].shape, dtype=np.float32)
        self.observation_space = camera_space(flat, low_dim, self.cameras, self.image_size)
        low, high = self._env.action_spec
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._video = None
        if render_mode == "rgb_array":
            self._video_camera = render_camera or (self.cameras[0] if self.cameras else "frontview")
            self._video_size = (width, height)
            self._video = CameraRenderer(self._model, (self._video_camera,), self._video_size)

    def _observe(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        """robosuite's observation dict with robomimic's keys, plus ``flat``."""
        obs: dict[str, np.ndarray] = {}
        for key, value in raw.items():
            if is_image_key(key):
                continue
            if key.endswith("-state"):
                if key != "object-state":  # robot<i>_proprio-state repeats the robot's own keys
                    continue
                key = "object"
            obs[key] = np.atleast_1d(np.asarray(value, dtype=np.float32))
        missing = [key for key in self._parts if key not in obs]
        if missing:
            raise UserError(f"robosuite's {self.task} gives no observation {', '.join(missing)}; build it with "
                            "use_object_obs=True and the task's robots")
        flat = np.concatenate([obs[key] for key in self._parts]) if self._parts else \
            np.concatenate([obs[key] for key in sorted(obs)])
        images = {f"{camera}_image": np.ascontiguousarray(raw[f"{camera}_image"][::-1]) for camera in self.cameras}
        return {"flat": flat} | obs | images  # robosuite renders bottom row first (OpenGL)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            # robosuite draws placements and joint noise from one generator that its samplers share:
            # reseed it in place so each holder sees the new stream.
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        obs = self._observe(self._env.reset())
        if self._model is not self._env.sim.model._model:  # hard_reset=True loads a new model at each reset
            self._model, self._data = self._env.sim.model._model, self._env.sim.data._data
            if self._video is not None:
                self._video.close()
                self._video = CameraRenderer(self._model, (self._video_camera,), self._video_size)
        self._elapsed_steps, self._succeeded = 0, bool(self._env._check_success())
        return obs, {"is_success": self._succeeded}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        raw, reward, _, _ = self._env.step(np.asarray(action, dtype=np.float64))
        self._elapsed_steps += 1
        success = bool(self._env._check_success())
        self._succeeded = self._succeeded or success
        terminated = self.terminate_on_success and success
        truncated = self._elapsed_steps >= self.horizon
        return self._observe(raw), float(reward), terminated, truncated, {"is_success": self._succeeded}

    def render(self) -> np.ndarray | None:
        if self._video is None:
            return None
        return self._video.render(self._data)[f"{self._video_camera}_image"]

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None
        self._env.close()

    # -- replayable state -----------------------------------------------------------------------

    def _hidden_state(self) -> list[tuple[Any, str, tuple[int, ...], np.dtype]]:
        """robosuite's state outside MuJoCo, as (holder, attribute or key, shape, dtype): each gripper's
        command, which it integrates from step to step (``current_action``), and the observation cache,
        from which some sensors read other observables as sampled a step earlier (``Can_to_robot0_eef_pos``
        reads the can's position before it is sampled again). The cache holds the same keys after every reset."""
        grippers = [(gripper, "current_action") for robot in self._env.robots for gripper in robot.gripper.values()]
        cache = self._env._obs_cache
        items = [(gripper, name, np.asarray(getattr(gripper, name))) for gripper, name in grippers]
        items += [(cache, key, np.asarray(cache[key])) for key in sorted(cache)]
        return [(holder, name, value.shape, value.dtype) for holder, name, value in items]

    def get_state(self) -> np.ndarray:
        """``[elapsed_steps, succeeded, *robosuite's hidden state, *mujoco_integration_state]`` (float64)."""
        hidden = [np.ravel(_read(holder, name)).astype(np.float64) for holder, name, _, _ in self._hidden_state()]
        return np.concatenate([[float(self._elapsed_steps), float(self._succeeded)], *hidden,
                               get_physics_state(self._model, self._data)])

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Restore a vector from :meth:`get_state` and return the observation there; the following steps
        replay exactly (the arm controllers compute their goals afresh from the simulation each step)."""
        hidden = self._hidden_state()
        sizes = [int(np.prod(shape)) for _, _, shape, _ in hidden]
        state = state_vector(state, 2 + sum(sizes) + physics_state_size(self._model), self.task,
                             "pass a vector returned by get_state() of the same task")
        values = np.split(state[2:2 + sum(sizes)], np.cumsum(sizes)[:-1])
        physics = state[2 + sum(sizes):]
        set_physics_state(self._model, self._data, physics)
        # mujoco 3.3's mj_forward (inside set_physics_state) rewrites the solver's warm start; set it back
        # so the next step starts the solver where the recorded run did.
        mujoco.mj_setState(self._model, self._data, physics, PHYSICS_STATE_SPEC)
        self._elapsed_steps, self._succeeded = int(state[0]), bool(state[1])
        obs = self._observe(self._observe_now())  # reads the cache too: restored after
        for (holder, name, shape, dtype), value in zip(hidden, values):
            _write(holder, name, value.astype(dtype).reshape(shape))
        return obs

    def _observe_now(self) -> dict[str, Any]:
        """robosuite's observables read from the simulation now, leaving their sampling clocks as they were.

        robosuite samples each observable once per step, on a clock a forced read would shift by one
        physics substep: the steps after :meth:`set_state` would then observe at other instants."""
        fields = ("_time_since_last_sample", "_sampled", "_current_delay")
        clocks = {name: [getattr(o, f) for f in fields] for name, o in self._env._observables.items()}
        raw = self._env._get_observations(force_update=True)
        for name, observable in self._env._observables.items():
            for field_name, value in zip(fields, clocks[name]):
                setattr(observable, field_name, value)
        return raw


def _read(holder: Any, name: str) -> Any:
    return holder[name] if isinstance(holder, dict) else getattr(holder, name)


def _write(holder: Any, name: str, value: np.ndarray) -> None:
    if isinstance(holder, dict):
        holder[name] = value
    else:
        setattr(holder, name, value)


def make_robosuite_env(task: str, **kwargs: Any) -> RobosuiteTask:
    """Build robosuite task ``task`` (see :class:`RobosuiteTask` for the arguments; others go to robosuite)."""
    return RobosuiteTask(task, **kwargs)
