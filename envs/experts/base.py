"""The expert interface every task's expert implements, and a helper for batched observations."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Expert(Protocol):
    """A deterministic policy that can be queried at any state, from the observation alone.

    ``act`` takes one observation ``(D,)`` or a batch ``(N, D)`` and returns actions ``(A,)`` or
    ``(N, A)`` (float32, inside the task's action space). Row ``i`` of a batched call equals the
    call on row ``i`` alone, so closed-loop states can be relabeled in bulk.
    """

    def act(self, obs: np.ndarray) -> np.ndarray: ...


def as_batch(obs: np.ndarray, obs_dim: int) -> tuple[np.ndarray, bool]:
    """``obs`` as a float64 ``(N, obs_dim)`` array, and whether it was a single ``(obs_dim,)`` one."""
    array = np.asarray(obs, dtype=np.float64)
    if array.ndim == 1 and array.shape[0] == obs_dim:
        return array[None, :], True
    if array.ndim == 2 and array.shape[1] == obs_dim:
        return array, False
    raise ValueError(f"expected an observation of shape ({obs_dim},) or (N, {obs_dim}), got {array.shape}")


def unbatch(actions: np.ndarray, single: bool) -> np.ndarray:
    """Undo :func:`as_batch` on the actions: float32, ``(A,)`` for a single observation."""
    actions = actions.astype(np.float32)
    return actions[0] if single else actions


def smooth_norm_clip(vectors: np.ndarray, max_norm: float) -> np.ndarray:
    """Scale each row of ``vectors`` ``(N, K)`` so its norm becomes ``max_norm * tanh(norm / max_norm)``.

    Direction is kept, small vectors pass almost unchanged, large ones saturate smoothly at
    ``max_norm`` (unlike hard clipping, the map is differentiable, which imitation learners like).
    """
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    scale = max_norm * np.tanh(norms / max_norm) / np.maximum(norms, 1e-9)
    # For tiny norms tanh(x)/x -> 1; the maximum() only guards the division.
    return vectors * np.where(norms > 1e-9, scale, 1.0)
