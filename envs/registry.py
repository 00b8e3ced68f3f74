"""The task registry: every task with its sizes, horizon, expert and success criterion, in one dict.

Adding a task = one module (env + expert) and one line in :data:`TASKS`. The sizes here are what
:func:`task_spec` reports without building the env (so unavailable tasks can still be described);
a test checks them against the built envs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Literal, Sequence

import gymnasium

from dopr_robot.errors import UserError
from envs.cameras import check_cameras, check_image_size
from envs.experts.base import Expert
from envs.experts.fetch import FetchPickAndPlaceExpert, FetchPushExpert, FetchReachExpert
from envs.experts.push import PushExpert
from envs.experts.reach import ReachExpert
from envs.experts.robosuite_lift import RobosuiteLiftExpert
from envs import robosuite_tasks as rs  # builds robosuite envs; imports robosuite only then
from envs.experts.sb3 import has_weights, load_sb3_expert
# fetch_installed is re-exported: tests skip on ``envs.registry.fetch_installed()``.
from envs.fetch import FETCH_CAMERAS, FETCH_OBS_KEYS, fetch_installed, make_fetch_env  # noqa: F401
from envs.locomotion import make_locomotion_env
from envs.metaworld_tasks import (
    METAWORLD_CAMERAS, METAWORLD_OBS_KEYS, METAWORLD_TASKS, MetaWorldExpert, make_metaworld_env, registry_name,
)
from envs.push import PushEnv
from envs.reach import ReachEnv

ExpertKind = Literal["scripted", "sb3"]


@dataclass(frozen=True)
class TaskSpec:
    """A task described without building it.

    ``available`` means both the env and its expert can be built now; ``unavailable_reason`` says
    what is missing otherwise (an optional extra, expert weights). ``horizon`` is the default
    episode length; episodes are judged by ``info["is_success"]`` on their final step.
    """

    name: str
    obs_dim: int
    act_dim: int
    horizon: int
    expert_kind: ExpertKind
    available: bool
    unavailable_reason: str
    success_criterion: str
    obs_keys: dict[str, int] = field(default_factory=dict)  # named low-dim parts of the flat state -> size
    cameras: tuple[str, ...] = ()  # cameras make(name, cameras=...) can render


@dataclass(frozen=True)
class Extra:
    """An optional suite some tasks need: the pip extra that installs it and how to tell it is there."""

    name: str  # the pip extra, e.g. "fetch"
    modules: tuple[str, ...]  # importable modules whose presence means it is installed

    def installed(self) -> bool:
        """Whether every module can be imported (found without importing it, so this stays cheap)."""
        return all(importlib.util.find_spec(module) is not None for module in self.modules)


FETCH_EXTRA = Extra("fetch", ("gymnasium_robotics",))
METAWORLD_EXTRA = Extra("metaworld", ("metaworld",))


@dataclass(frozen=True)
class TaskEntry:
    """One registry line: how to build the env and the expert, and what :class:`TaskSpec` reports."""

    make_env: Callable[..., gymnasium.Env]
    make_expert: Callable[[], Expert]
    obs_dim: int
    act_dim: int
    horizon: int
    expert_kind: ExpertKind
    success_criterion: str
    extra: Extra | None = None  # the optional suite the task needs, None for the core install
    obs_parts: dict[str, Any] = field(default_factory=dict)  # named part -> slice or index array of the flat obs
    cameras: tuple[str, ...] = ()


def _own(env_class: type, **kwargs: object) -> TaskEntry:
    """An own MuJoCo task: its named observation parts and cameras come from the env class."""
    return TaskEntry(make_env=env_class, obs_parts=env_class.OBS_KEYS, cameras=env_class.CAMERAS, **kwargs)


def _part_size(part: Any, obs_dim: int) -> int:
    return len(range(obs_dim)[part]) if isinstance(part, slice) else len(part)


def _fetch(task: str, obs_dim: int, expert: Callable[[], Expert], achieved: str) -> TaskEntry:
    return TaskEntry(
        make_env=partial(make_fetch_env, task),
        make_expert=expert,
        obs_dim=obs_dim,
        act_dim=4,
        horizon=50,
        expert_kind="scripted",
        success_criterion=f"{achieved} within 5 cm of the goal on the final step",
        extra=FETCH_EXTRA,
        obs_parts=FETCH_OBS_KEYS[task],
        cameras=FETCH_CAMERAS,
    )


def _metaworld(env_name: str, horizon: int) -> TaskEntry:
    return TaskEntry(
        make_env=partial(make_metaworld_env, env_name),
        make_expert=partial(MetaWorldExpert, env_name),
        obs_dim=39,
        act_dim=4,
        horizon=horizon,
        expert_kind="scripted",
        success_criterion="MetaWorld's info['success'] reached at any step (is_success latches it, so the final "
                          "step reports it)",
        extra=METAWORLD_EXTRA,
        obs_parts=METAWORLD_OBS_KEYS,
        cameras=METAWORLD_CAMERAS,
    )


def _locomotion(task: str, obs_dim: int, act_dim: int, success_return: float) -> TaskEntry:
    return TaskEntry(
        make_env=partial(make_locomotion_env, task, success_return=success_return),
        make_expert=partial(load_sb3_expert, task, obs_dim),
        obs_dim=obs_dim,
        act_dim=act_dim,
        horizon=1000,
        expert_kind="sb3",
        success_criterion=f"not terminated in 1000 steps and return >= {success_return:g}",
    )


def _robosuite(task: str) -> TaskEntry:
    """A robosuite task as robomimic names it; Lift has a scripted expert, the others serve datasets."""
    return TaskEntry(
        make_env=partial(rs.make_robosuite_env, task),
        make_expert=RobosuiteLiftExpert if task == "Lift" else partial(rs.no_expert, task),
        obs_dim=rs.obs_dim(task),
        act_dim=rs.act_dim(task),
        horizon=rs.ROBOSUITE_TASKS[task].horizon,
        expert_kind="scripted" if task == "Lift" else "none",
        success_criterion=rs.success_criterion(task),
        extra=Extra("robosuite", ("robosuite",)),
        obs_parts=rs.flat_parts(task),
        cameras=rs.ROBOSUITE_TASKS[task].cameras,
    )


# Locomotion success returns are task definitions, not expert measurements: about two thirds of
# gymnasium's reward_threshold where it has one (Hopper 3800, HalfCheetah 4800, Ant 6000). Walker2d
# has none and gets Hopper's level; Humanoid's healthy reward alone is 5000 over 1000 steps, so it
# needs 6000 (forward progress). Override per env with make(name, success_return=...).
TASKS: dict[str, TaskEntry] = {
    "Reach-v0": _own(
        ReachEnv,
        make_expert=ReachExpert,
        obs_dim=18,
        act_dim=3,
        horizon=100,
        expert_kind="scripted",
        success_criterion="fingertip within 2.5 cm of the target on the final step",
    ),
    "Push-v0": _own(
        PushEnv,
        make_expert=PushExpert,
        obs_dim=15,
        act_dim=2,
        horizon=150,
        expert_kind="scripted",
        success_criterion="puck within 3 cm of the goal on the final step",
    ),
    "FetchReach-v4": _fetch("FetchReach-v4", 16, FetchReachExpert, "gripper"),
    "FetchPush-v4": _fetch("FetchPush-v4", 31, FetchPushExpert, "block"),
    "FetchPickAndPlace-v4": _fetch("FetchPickAndPlace-v4", 31, FetchPickAndPlaceExpert, "block"),
    **{task: _robosuite(task) for task in rs.ROBOSUITE_TASKS},
    "Hopper-v5": _locomotion("Hopper-v5", 11, 3, success_return=2500.0),
    "Walker2d-v5": _locomotion("Walker2d-v5", 17, 6, success_return=2500.0),
    "HalfCheetah-v5": _locomotion("HalfCheetah-v5", 17, 6, success_return=3000.0),
    "Ant-v5": _locomotion("Ant-v5", 105, 8, success_return=4000.0),
    "Humanoid-v5": _locomotion("Humanoid-v5", 348, 17, success_return=6000.0),
    **{registry_name(env_name): _metaworld(env_name, horizon) for env_name, horizon in METAWORLD_TASKS.items()},
}

GYMNASIUM_NAMESPACE = "dopr"


def list_tasks() -> list[str]:
    """Names of all registered tasks, available or not, in registry order."""
    return list(TASKS)


def _lookup(name: str) -> tuple[str, TaskEntry]:
    """The registry key and entry for ``name`` (a leading ``dopr/`` is accepted), or a UserError."""
    key = name.removeprefix(f"{GYMNASIUM_NAMESPACE}/")
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return key, TASKS[key]


def missing_extra_reason(entry: TaskEntry) -> str:
    """What to install for ``entry``'s task, or "" when it needs no extra or its extra is installed."""
    if entry.extra is None or entry.extra.installed():
        return ""
    return f"needs the {entry.extra.name} extra: pip install 'dopr-robot[{entry.extra.name}]'"


def _check_extra(name: str, entry: TaskEntry) -> None:
    if reason := missing_extra_reason(entry):
        raise UserError(f"task {name} is unavailable: {reason}")


def _unavailable_reason(name: str, entry: TaskEntry) -> str:
    if reason := missing_extra_reason(entry):
        return reason
    if entry.expert_kind == "sb3" and not has_weights(name):
        return f"no expert weights yet (envs/experts/weights/{name}/)"
    if entry.expert_kind == "none":  # the env builds (a dataset's policy is evaluated on it); nothing collects
        return rs.NO_EXPERT_REASON
    return ""


def task_spec(name: str) -> TaskSpec:
    """Describe task ``name`` without building it; unknown names raise :class:`UserError`."""
    key, entry = _lookup(name)
    reason = _unavailable_reason(key, entry)
    return TaskSpec(
        name=key,
        obs_dim=entry.obs_dim,
        act_dim=entry.act_dim,
        horizon=entry.horizon,
        expert_kind=entry.expert_kind,
        available=not reason,
        unavailable_reason=reason,
        success_criterion=entry.success_criterion,
        obs_keys={key: _part_size(part, entry.obs_dim) for key, part in entry.obs_parts.items()},
        cameras=entry.cameras,
    )


def obs_key_slices(name: str) -> dict[str, Any]:
    """The named low-dimensional parts of task ``name``'s flat observation: each a slice of it, or an
    index array where the part is not contiguous (Fetch's gripper state); ``flat[..., part]`` selects it."""
    _, entry = _lookup(name)
    return dict(entry.obs_parts)


def make(name: str, cameras: Sequence[str] = (), image_size: Sequence[int] = (64, 64),
         **kwargs: object) -> gymnasium.Env:
    """Build task ``name``; keyword arguments go to its constructor (e.g. ``render_mode="rgb_array"``).

    The returned env has ``get_state()``/``set_state(state)``. Locomotion envs build without expert
    weights; a missing optional extra raises :class:`UserError` naming the install command.
    ``cameras`` (names from ``task_spec(name).cameras``) make the observation a ``Dict``: the flat
    state under ``"flat"``, the named low-dimensional parts, and ``"<camera>_image"`` uint8
    ``(H, W, 3)`` at ``image_size`` = (width, height); see :mod:`envs.cameras`. An unknown camera
    is one :class:`UserError` line listing the task's cameras.
    """
    key, entry = _lookup(name)
    _check_extra(name, entry)
    cameras = check_cameras(key, cameras, entry.cameras)
    if cameras:
        kwargs |= {"cameras": cameras, "image_size": check_image_size(image_size)}
    return entry.make_env(**kwargs)


def make_expert(name: str) -> Expert:
    """Build the expert of task ``name``: scripted, or loaded from SB3 weights (UserError when absent)."""
    _, entry = _lookup(name)
    _check_extra(name, entry)
    return entry.make_expert()


def describe_tasks() -> str:
    """A plain-text table of every task: sizes, horizon, expert kind, cameras and availability."""
    header = ("task", "obs", "act", "horizon", "expert", "cameras", "status")
    rows = [header]
    for name in TASKS:
        spec = task_spec(name)
        status = "available" if spec.available else f"unavailable: {spec.unavailable_reason}"
        cameras = ",".join(spec.cameras) or "-"
        rows.append((spec.name, str(spec.obs_dim), str(spec.act_dim), str(spec.horizon), spec.expert_kind, cameras,
                     status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    return "\n".join(lines)
