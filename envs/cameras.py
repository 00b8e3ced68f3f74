"""Camera observations: images rendered offscreen from named cameras of a MuJoCo model.

A task that offers cameras returns, when made with ``cameras=(...)``, a ``Dict`` observation: its flat
state under ``"flat"``, its named low-dimensional parts, and one ``"<camera>_image"`` uint8
``(H, W, 3)`` per camera (robomimic's key names and layout). One :class:`mujoco.Renderer` serves every
camera of an env (they share the image size) and lives as long as the env: building one per frame
would cost more than rendering.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Sequence

import mujoco
import numpy as np
from gymnasium import spaces

from dopr_robot.errors import UserError

IMAGE_SUFFIX = "_image"
FLAT_KEY = "flat"
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 8, 1024


def image_key(camera: str) -> str:
    """The observation key of ``camera``'s images (``agentview`` -> ``agentview_image``)."""
    return f"{camera}{IMAGE_SUFFIX}"


def is_image_key(key: str) -> bool:
    return key.endswith(IMAGE_SUFFIX)


def check_cameras(task: str, cameras: Sequence[str], offered: Sequence[str]) -> tuple[str, ...]:
    """``cameras`` as a tuple, each once; a camera the task lacks is one UserError line listing its cameras."""
    cameras = tuple(cameras)
    for camera in cameras:
        if camera not in offered:
            listed = ", ".join(offered) if offered else "none (it renders no camera observations)"
            raise UserError(f"task {task} has no camera {camera!r}; its cameras: {listed}")
    if len(set(cameras)) < len(cameras):
        raise UserError(f"cameras names a camera twice: {','.join(cameras)}")
    return cameras


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """``(width, height)`` in pixels, each within [MIN_IMAGE_SIDE, MAX_IMAGE_SIDE], or a UserError naming
    ``image_size`` (CollectConfig's message names the option instead). Data files reach it too: the
    image size of an evaluation is the training data's."""
    size = tuple(image_size)
    if (len(size) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
            or not all(MIN_IMAGE_SIDE <= v <= MAX_IMAGE_SIDE for v in size)):
        raise UserError(f"image_size must be N or WIDTHxHEIGHT with sides {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} "
                        f"pixels, got {image_size!r}")
    return int(size[0]), int(size[1])


def look_at(model: mujoco.MjModel, camera: str, position: Sequence[float], target: Sequence[float],
            fovy: float) -> None:
    """Place ``camera`` of ``model`` in the world at ``position``, looking at ``target`` (z up)."""
    forward = np.asarray(target, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    quaternion = np.zeros(4)
    mujoco.mju_mat2Quat(quaternion, np.stack([right, up, -forward], axis=1).flatten())  # a camera looks along -z
    index = model.camera(camera).id
    model.cam_bodyid[index], model.cam_mode[index] = 0, mujoco.mjtCamLight.mjCAMLIGHT_FIXED
    model.cam_pos[index], model.cam_quat[index], model.cam_fovy[index] = position, quaternion, fovy


def camera_space(flat: spaces.Box, low_dim: dict[str, int], cameras: Sequence[str],
                 image_size: tuple[int, int]) -> spaces.Dict:
    """The ``Dict`` observation space: ``flat``, the low-dimensional keys, then one image per camera."""
    width, height = image_size
    parts: dict[str, spaces.Space] = {FLAT_KEY: flat}
    parts |= {key: spaces.Box(-np.inf, np.inf, shape=(size,), dtype=flat.dtype) for key, size in low_dim.items()}
    parts |= {image_key(c): spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8) for c in cameras}
    return spaces.Dict(parts)


# Renderers not yet closed. A GL context left to its own __del__ is freed during interpreter teardown, after
# mujoco's atexit hook has terminated the EGL display, and prints an EGLError traceback after a script that
# simply never closed its env; these are closed at exit instead, by a hook registered after the first
# renderer exists, hence after mujoco's, hence run before it.
_open_renderers: weakref.WeakSet[mujoco.Renderer] = weakref.WeakSet()


def _close_open_renderers() -> None:
    for renderer in list(_open_renderers):
        renderer.close()


class CameraRenderer:
    """Renders ``cameras`` of ``model`` at ``image_size`` (width, height) into uint8 ``(H, W, 3)`` arrays."""

    def __init__(self, model: mujoco.MjModel, cameras: Sequence[str], image_size: tuple[int, int],
                 model_names: dict[str, str] | None = None) -> None:
        """``model_names``: the model's name of a camera offered under another name (default: the same)."""
        width, height = image_size
        # The offscreen buffer must hold the image; the assets size it for their video camera.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.cameras = tuple(cameras)
        self.ids = [model.camera((model_names or {}).get(camera, camera)).id for camera in self.cameras]
        self.renderer = mujoco.Renderer(model, height=height, width=width)
        if not _open_renderers:
            atexit.unregister(_close_open_renderers)
            atexit.register(_close_open_renderers)
        _open_renderers.add(self.renderer)

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        images = {}
        for camera, camera_id in zip(self.cameras, self.ids):
            self.renderer.update_scene(data, camera=camera_id)
            images[image_key(camera)] = self.renderer.render()  # a new array each call, top row first
        return images

    def close(self) -> None:
        self.renderer.close()
        _open_renderers.discard(self.renderer)
