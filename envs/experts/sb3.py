"""Experts trained with stable-baselines3, shipped as plain torch actors in ``envs/experts/weights/<Task>/``.

Layout of one task's folder (written by ``dopr-robot expert export``)::

    envs/experts/weights/Hopper-v5/
        actor.pt        # state_dict of build_actor(actor.json) (torch.load(..., weights_only=True))
        actor.json      # sizes, activation, output squashing, action bounds, observation normalizer
        manifest.json   # how it was made (command, versions, steps, wall time) and how good it is

Inference needs only torch (imported on first load): the actor reproduces SB3's ``predict(deterministic=True)``. SAC and
TD3 actors end in ``tanh`` and are rescaled to the action bounds; PPO's Gaussian mean is clipped to
them. Observations go through the frozen VecNormalize statistics first when training used them.

A folder holding ``model.zip`` + ``meta.json`` (``{"algo": "SAC"}``) instead is the older format;
it still loads, through stable-baselines3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dopr_robot.errors import UserError
from envs.experts.base import as_batch, unbatch

WEIGHTS_ROOT = Path(__file__).parent / "weights"
ACTOR_FILE = "actor.pt"
ACTOR_CONFIG_FILE = "actor.json"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.zip"  # older format
META_FILE = "meta.json"  # older format
SB3_ALGORITHMS = ("A2C", "DDPG", "PPO", "SAC", "TD3")
SQUASHES = ("tanh", "clip")


def weights_dir(task: str, root: Path | None = None) -> Path:
    """Where the weights of ``task``'s expert live (``root`` defaults to :data:`WEIGHTS_ROOT`)."""
    return (WEIGHTS_ROOT if root is None else Path(root)) / task


def has_weights(task: str, root: Path | None = None) -> bool:
    """Whether ``task`` has expert weights in either format (cheap: no loading)."""
    folder = weights_dir(task, root)
    return (folder / ACTOR_FILE).is_file() or (folder / MODEL_FILE).is_file()


def is_expert_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an expert (either format, or a manifest of one): a folder an export
    may replace with ``overwrite``, unlike a folder of other files."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in (ACTOR_FILE, MANIFEST_FILE, MODEL_FILE))


def manifest_task(folder: Path) -> str | None:
    """The task named in ``folder``'s manifest.json (None without a readable one)."""
    try:
        task = json.loads((Path(folder) / MANIFEST_FILE).read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None
    return task if isinstance(task, str) else None


def build_actor(config: dict[str, Any]):
    """The torch module of an exported actor, with zeroed statistics (load ``actor.pt`` into it).

    ``config`` is ``actor.json``: ``obs_dim``, ``act_dim``, ``hidden`` (sizes), ``activation``
    (relu, tanh, elu, leaky_relu), ``squash`` (tanh, clip), ``action_low``/``action_high`` and
    ``obs_norm`` (``None`` or ``{"epsilon", "clip_obs"}``). Its state_dict: ``net.<i>.weight/bias``
    of an ``nn.Sequential`` (Linear, activation, ..., Linear) and the buffers ``action_low``,
    ``action_high``, ``obs_mean``, ``obs_var`` (float64, VecNormalize's). :func:`actor_forward` runs it.
    """
    import torch
    from torch import nn

    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
    if config["activation"] not in activations:
        raise ValueError(f"unknown activation {config['activation']!r}; valid: {', '.join(activations)}")
    if config["squash"] not in SQUASHES:
        raise ValueError(f"unknown squash {config['squash']!r}; valid: {', '.join(SQUASHES)}")
    sizes = [int(config["obs_dim"]), *(int(h) for h in config["hidden"])]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activations[config["activation"]]()]
    layers.append(nn.Linear(sizes[-1], int(config["act_dim"])))
    actor = nn.Module()
    actor.net = nn.Sequential(*layers)
    actor.register_buffer("action_low", torch.tensor(config["action_low"], dtype=torch.float32))
    actor.register_buffer("action_high", torch.tensor(config["action_high"], dtype=torch.float32))
    actor.register_buffer("obs_mean", torch.zeros(sizes[0], dtype=torch.float64))
    actor.register_buffer("obs_var", torch.ones(sizes[0], dtype=torch.float64))
    return actor.eval()


def actor_forward(actor, config: dict[str, Any], obs):
    """SB3's deterministic action: ``obs (N, D)`` tensor → ``(N, A)`` float32 tensor.

    Normalizer (when ``obs_norm``): VecNormalize's ``clip((obs - mean) / sqrt(var + eps), ±clip_obs)``
    in float64. Then the MLP in float32 on its output ``u``; ``squash="tanh"`` returns
    ``low + (tanh(u) + 1) / 2 * (high - low)`` (SAC, TD3), ``squash="clip"`` returns ``u`` clipped to
    ``[low, high]`` (PPO's Gaussian mean, which SB3 clips in ``predict``).
    """
    import torch

    norm = config.get("obs_norm")
    if norm is not None:
        obs = obs.to(torch.float64)
        obs = torch.clamp((obs - actor.obs_mean) / torch.sqrt(actor.obs_var + norm["epsilon"]), -norm["clip_obs"], norm["clip_obs"])
    out = actor.net(obs.to(torch.float32))
    if config["squash"] == "tanh":
        return actor.action_low + 0.5 * (torch.tanh(out) + 1.0) * (actor.action_high - actor.action_low)
    return torch.clamp(out, actor.action_low, actor.action_high)


def load_actor(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The actor module saved in ``folder`` (``actor.pt`` + ``actor.json``) and its config."""
    import torch

    folder = Path(folder)
    try:
        config = json.loads((folder / ACTOR_CONFIG_FILE).read_text())
        actor = build_actor(config)
        actor.load_state_dict(torch.load(folder / ACTOR_FILE, map_location="cpu", weights_only=True))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"cannot load the expert actor in {folder} ({type(err).__name__}: {err})") from err
    return actor, config


class TorchExpert:
    """Deterministic action of an exported actor (torch only); accepts ``(D,)`` or ``(N, D)`` observations."""

    def __init__(self, actor: Any, config: dict[str, Any]) -> None:
        self.actor = actor
        self.config = config
        self.obs_dim = int(config["obs_dim"])

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(A,)`` or ``(N, A)``, float32, inside the action bounds."""
        import torch

        batch, single = as_batch(obs, self.obs_dim)
        with torch.no_grad():
            actions = actor_forward(self.actor, self.config, torch.from_numpy(batch))
        return unbatch(actions.numpy(), single)


class SB3Expert:
    """Deterministic action of a loaded SB3 model (older format); accepts ``(D,)`` or ``(N, D)``."""

    def __init__(self, model: object, obs_dim: int) -> None:
        self.model = model
        self.obs_dim = obs_dim

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``(A,)`` or ``(N, A)``, float32, clipped to the model's action space."""
        batch, single = as_batch(obs, self.obs_dim)
        actions, _ = self.model.predict(batch, deterministic=True)
        space = self.model.action_space
        return unbatch(np.clip(actions, space.low, space.high), single)


def load_sb3_expert(task: str, obs_dim: int, root: Path | None = None) -> TorchExpert | SB3Expert:
    """Load ``task``'s expert from its weights folder, or raise :class:`UserError` saying how to get one."""
    folder = weights_dir(task, root)
    if (folder / ACTOR_FILE).is_file():
        return load_expert_folder(folder, obs_dim, task)
    if not (folder / MODEL_FILE).is_file():
        raise UserError(
            f"no expert weights for {task} yet (expected {folder / ACTOR_FILE}): "
            f"train one with `dopr-robot expert train --task {task} ...` and export it"
        )
    return _load_sb3_zip(folder, obs_dim, task)


def load_expert_folder(folder: Path, obs_dim: int, task: str) -> TorchExpert:
    """The exported actor in ``folder``, checked against the task its manifest names (tasks of the same
    sizes, such as Walker2d-v5 and HalfCheetah-v5, would run each other's experts) and the task's
    observation size."""
    made_for = manifest_task(folder)
    if made_for is not None and made_for != task:
        raise UserError(f"the expert in {folder} was trained on {made_for}, not {task} (its manifest.json says so); "
                        f"use {task}'s expert or evaluate it on {made_for}")
    actor, config = load_actor(folder)
    if int(config["obs_dim"]) != obs_dim:
        raise UserError(
            f"expert weights in {folder} expect observations of shape ({config['obs_dim']},), "
            f"but {task} gives ({obs_dim},): retrain the expert on this task"
        )
    return TorchExpert(actor, config)


def _load_sb3_zip(folder: Path, obs_dim: int, task: str) -> SB3Expert:
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
