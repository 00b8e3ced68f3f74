"""Experts from stable-baselines3 weights shipped in ``envs/experts/weights/<Task>/``.

Layout of one task's folder (written by the expert-training command)::

    envs/experts/weights/Hopper-v5/
        model.zip    # ``model.save(...)`` of an SB3 algorithm trained on the raw observations
        meta.json    # {"algo": "SAC"}; one of the keys of SB3_ALGORITHMS; other keys are ignored

The policy is queried with ``deterministic=True``; it must take the task's observation as is (no
VecNormalize statistics are applied here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dopr_robot.errors import UserError
from envs.experts.base import as_batch, unbatch

WEIGHTS_ROOT = Path(__file__).parent / "weights"
MODEL_FILE = "model.zip"
META_FILE = "meta.json"
SB3_ALGORITHMS = ("A2C", "DDPG", "PPO", "SAC", "TD3")


def weights_dir(task: str, root: Path | None = None) -> Path:
    """Where the weights of ``task``'s expert live (``root`` defaults to :data:`WEIGHTS_ROOT`)."""
    return (WEIGHTS_ROOT if root is None else Path(root)) / task


def has_weights(task: str, root: Path | None = None) -> bool:
    """Whether ``task`` has an expert model file (cheap: no loading)."""
    return (weights_dir(task, root) / MODEL_FILE).is_file()


class SB3Expert:
    """Deterministic action of a loaded SB3 model; accepts ``(D,)`` or ``(N, D)`` observations."""

    def __init__(self, model: object, obs_dim: int) -> None:
        self.model = model
        self.obs_dim = obs_dim

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(A,)`` or ``(N, A)``, float32, clipped to the model's action space."""
        batch, single = as_batch(obs, self.obs_dim)
        actions, _ = self.model.predict(batch, deterministic=True)
        space = self.model.action_space
        return unbatch(np.clip(actions, space.low, space.high), single)


def load_sb3_expert(task: str, obs_dim: int, root: Path | None = None) -> SB3Expert:
    """Load ``task``'s expert from its weights folder, or raise :class:`UserError` saying how to get one."""
    folder = weights_dir(task, root)
    if not (folder / MODEL_FILE).is_file():
        raise UserError(
            f"no expert weights for {task} yet (expected {folder / MODEL_FILE}): "
            f"train one with `dopr-robot expert train --task {task} ...`"
        )
    try:
        meta = json.loads((folder / META_FILE).read_text())
        algo_name = str(meta["algo"]).upper()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"expert weights for {task} need {folder / META_FILE} with the algorithm, "
            f'e.g. {{"algo": "SAC"}} ({err})'
        ) from err
    if algo_name not in SB3_ALGORITHMS:
        raise UserError(
            f"{folder / META_FILE} names algorithm {meta['algo']!r}; expected one of {', '.join(SB3_ALGORITHMS)}"
        )

    from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3

    algorithms = {"A2C": A2C, "DDPG": DDPG, "PPO": PPO, "SAC": SAC, "TD3": TD3}
    model = algorithms[algo_name].load(folder / MODEL_FILE, device="cpu")
    if model.observation_space.shape != (obs_dim,):
        raise UserError(
            f"expert weights for {task} expect observations of shape {model.observation_space.shape}, "
            f"but the task gives ({obs_dim},): retrain the expert on this task"
        )
    return SB3Expert(model, obs_dim)
