"""Observation histories padded with the episode's first observation: one rule for training and evaluation.

A policy with ``history = H`` sees, at step ``t`` of an episode, the observations ``t-H+1 .. t``
(oldest first). Before the episode has ``H`` observations, the missing ones are the episode's first
observation (step 0), repeated. Training windows (:meth:`demos.dataset.DemoDataset.windows`), the
policy relabelling of visited states in evaluation (``dopr_robot.evaluate.evaluation.policy_actions``)
and the rollout controller's incremental buffer (``dopr_robot.evaluate.rollout.PolicyController``,
held to :func:`history_indices` by a test) all pad this way, so a policy sees at evaluation exactly
the inputs it was trained on.
"""

from __future__ import annotations

import numpy as np


def _check_history(history: int) -> None:
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 1:
        raise ValueError(f"history must be an integer >= 1, got {history!r}")


def history_window(steps: np.ndarray, history: int) -> tuple[np.ndarray, np.ndarray]:
    """For each step ``t`` in ``steps`` ``(M,)`` (steps within their own episodes, ``>= 0``): the
    steps ``t-history+1 .. t`` clamped at 0, ``(M, history)`` int64, and which of them are real
    (not padding), ``(M, history)`` bool. Add an episode's start offset to index a flat array."""
    _check_history(history)
    steps = np.asarray(steps, dtype=np.int64)
    past = steps[:, None] + np.arange(-history + 1, 1, dtype=np.int64)[None, :]
    return np.maximum(past, 0), past >= 0


def history_indices(length: int, history: int) -> np.ndarray:
    """``(length, history)`` indices into one episode's observations ``(length, D)``: row ``t`` holds
    ``t-history+1 .. t`` clamped at 0, so ``obs[history_indices(len(obs), H)]`` is ``(length, H, D)``."""
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be an integer >= 0, got {length!r}")
    return history_window(np.arange(length), history)[0]
