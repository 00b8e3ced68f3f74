"""Tasks for behavior cloning: envs whose success is unambiguous, and experts that can be asked for
their action at any state.

Public API::

    list_tasks() -> list[str]
    task_spec(name) -> TaskSpec              # sizes, horizon, expert kind, availability, criterion
    make(name, cameras=(), image_size=(64, 64), **kwargs) -> gymnasium.Env  # also gymnasium.make("dopr/<name>")
    obs_key_slices(name) -> dict[str, slice] # the named low-dim parts of the flat observation
    make_expert(name) -> Expert              # expert.act(obs (D,) or (N, D)) -> action (A,) or (N, A)
    describe_tasks() -> str                  # the table behind `dopr-robot tasks`

Conventions shared by every task: observations are flat float32 ``Box`` vectors (for tasks with
cameras, made with ``cameras=...``, a ``Dict`` of that vector, its named parts and images, see
:mod:`envs.cameras`) (float64 for the
gymnasium locomotion tasks, unchanged), ``info["is_success"]`` is present on every step and in
the reset info, an episode counts as a success when ``is_success`` holds on its final step, the
horizon is counted inside the env (``truncated``; ``terminated`` only for real episode ends such as
a fallen Hopper), and ``env.get_state()`` saves a flat float64 vector that
``env.set_state(state)`` restores (returning the observation there) so the following steps replay
exactly.

Tasks are also registered with gymnasium under the ``dopr/`` namespace when this package is imported;
there they get gymnasium's usual checker wrappers: reach the state methods with
``env.get_wrapper_attr("get_state")`` (not ``env.unwrapped``, which for the Fetch and locomotion
tasks is the inner gymnasium env).
"""

from __future__ import annotations

import os

# Headless rendering. Set here, before anything imports mujoco: Python runs this file before any envs.* module.
os.environ.setdefault("MUJOCO_GL", "egl")

from functools import partial

import gymnasium

from envs.cameras import check_cameras, check_image_size, image_key, is_image_key
from envs.experts.base import Expert
from envs.registry import (
    GYMNASIUM_NAMESPACE,
    TASKS,
    TaskSpec,
    describe_tasks,
    list_tasks,
    make,
    make_expert,
    obs_key_slices,
    task_spec,
)

__all__ = ["Expert", "TaskSpec", "check_cameras", "check_image_size", "describe_tasks", "image_key", "is_image_key",
           "list_tasks", "make", "make_expert", "obs_key_slices", "task_spec"]

for _name in TASKS:
    if f"{GYMNASIUM_NAMESPACE}/{_name}" not in gymnasium.registry:
        gymnasium.register(id=f"{GYMNASIUM_NAMESPACE}/{_name}", entry_point=partial(make, _name))
del _name
