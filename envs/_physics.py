"""MuJoCo helpers shared by every task: a flat physics state, and fast offscreen rendering.

The physics state is MuJoCo's own ``mjSTATE_INTEGRATION`` vector (time, qpos, qvel, actuator
activations, the solver's warm start, controls, applied forces, mocap poses, ...). Restoring it
makes the next ``mj_step`` bitwise identical to the original run, which plain ``qpos``/``qvel``
does not guarantee in contact-rich scenes (the constraint solver starts from ``qacc_warmstart``).
"""

from __future__ import annotations

import mujoco
import numpy as np

PHYSICS_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


def physics_state_size(model: mujoco.MjModel) -> int:
    """Length of the vector :func:`get_physics_state` returns for ``model``."""
    return mujoco.mj_stateSize(model, PHYSICS_STATE_SPEC)


def get_physics_state(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """The full integration state of ``data`` as a float64 vector of :func:`physics_state_size`."""
    state = np.empty(physics_state_size(model), dtype=np.float64)
    mujoco.mj_getState(model, data, state, PHYSICS_STATE_SPEC)
    return state


def set_physics_state(model: mujoco.MjModel, data: mujoco.MjData, state: np.ndarray) -> None:
    """Restore a vector from :func:`get_physics_state` and recompute positions (``mj_forward``)."""
    state = np.asarray(state, dtype=np.float64)
    expected = physics_state_size(model)
    if state.shape != (expected,):
        raise ValueError(
            f"physics state has shape {state.shape}, expected ({expected},) for this model; "
            "pass a vector returned by get_state() of the same task"
        )
    mujoco.mj_setState(model, data, state, PHYSICS_STATE_SPEC)
    # mj_forward updates derived quantities (site positions, ...) that observations read. Some mujoco
    # versions (3.3) also overwrite qacc_warmstart there, which the next mj_step's solver starts from:
    # setting the state again afterwards keeps the replay bit-exact on every version.
    mujoco.mj_forward(model, data)
    mujoco.mj_setState(model, data, state, PHYSICS_STATE_SPEC)


def state_vector(state: np.ndarray, expected: int, what: str, hint: str) -> np.ndarray:
    """``state`` as a float64 vector of length ``expected``; a ValueError naming ``what`` and ``hint`` otherwise."""
    state = np.asarray(state, dtype=np.float64)
    if state.shape != (expected,):
        raise ValueError(f"{what} state has shape {state.shape}, expected ({expected},): {hint}")
    return state


def use_fast_rendering(model: mujoco.MjModel) -> None:
    """Make software (llvmpipe/EGL) rendering ~10x faster: no shadows, reflections or multisampling.

    Equivalent to turning off the scene flags ``mjRND_SHADOW`` and ``mjRND_REFLECTION``, but set on
    the model, so it holds for every renderer built later without reaching into one. Only visuals
    change; the physics does not read these fields.
    """
    model.vis.quality.offsamples = 0
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0.0
