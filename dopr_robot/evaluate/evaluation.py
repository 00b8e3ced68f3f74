"""Closed-loop evaluation of a policy: seeded episodes in K envs, the expert from the same initial states.

:func:`evaluate` rolls the policy out (``rollout.py``), rolls the task's expert out from the same
reset seeds, relabels every visited state with both (:func:`policy_actions`, batched), and returns an
:class:`EvalResult`: per-episode records, the closed-loop summary and the compounding-error summary
(``metrics.py``). :func:`make_evaluator` wraps it for ``train(..., evaluator=...)``; checkpoints are
evaluated by :func:`dopr_robot.evaluate.checkpoints.evaluate_checkpoint`.

Episode ``i`` always starts from ``reset(seed=seed + i)``, whatever ``num_envs`` is, so evaluations
of two checkpoints with the same seed face the same initial states, and the records come out in
seed order. The default first seed is ``envs.seeds.POLICY_EVAL``: every seed range of the toolkit
(demonstrations, evaluation, tuning, ...) is in ``envs/seeds.py``, disjoint from the others.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gymnasium
import numpy as np
import torch

import envs
from demos.history import history_indices
from dopr_robot.atomic import check_destination, write_json_atomic
from dopr_robot.config import EvalConfig
from dopr_robot.devices import module_device
from dopr_robot.errors import UserError
from dopr_robot.evaluate.metrics import (
    closed_loop_summary,
    compounding_summary,
    episode_compounding,
    episode_record,
    wilson_interval,
)
from dopr_robot.evaluate.rollout import (
    ExpertController,
    PolicyController,
    Trajectory,
    check_actions_per_chunk,
    low_dim_keys,
    low_dim_observation,
    rollout,
)
from envs import seeds
from policies import Policy

FORMAT = "dopr-robot/eval/1"
CELL_KEY = "cell"  # compare's record of the grid cell an evaluation belongs to (eval's own JSON has none)
DEFAULT_EVAL_SEED = seeds.POLICY_EVAL  # disjoint from the demonstration seeds (envs/seeds.py)


@dataclass
class EvalResult:
    """An evaluation as plain data (``to_dict()`` is what the JSON file holds).

    records: one dict per episode in seed order (see :func:`~dopr_robot.evaluate.metrics.episode_record`;
    with the expert also ``j_traj``, ``action_error_on_policy``/``_on_expert``, ``final_deviation``,
    ``time_to_divergence``, ``diverged``, ``expert_return``, ``expert_success``, ``expert_length``).
    closed_loop: N, success rate + Wilson interval, mean return + bootstrap interval. compounding: see
    :func:`~dopr_robot.evaluate.metrics.compounding_summary` (``time_to_divergence``, ``deviation_at``,
    ...), or None with ``compounding_note`` saying why. validation: the run's validation loss, when
    known. checkpoint: what was evaluated (path, step, policy, optimizer, the dataset record).
    """

    task: str
    env_kwargs: dict[str, Any]
    seed: int
    episodes: int
    num_envs: int
    actions_per_chunk: int
    closed_loop: dict[str, Any]
    records: list[dict[str, Any]]
    compounding: dict[str, Any] | None
    compounding_note: str
    env_steps: int
    elapsed_s: float
    validation: dict[str, Any] | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def metrics(self, prefix: str = "eval_") -> dict[str, float]:
        """Flat numbers for a training log: success rate (+ interval), mean return, and with the expert
        J_traj, the action errors and their ratio, the time to divergence (restricted mean), the
        fraction diverged and the deviation at 10/25/50/100% of the horizon (``deviation_at_50pct``)."""
        out = {"success_rate": self.closed_loop["success_rate"], "success_ci_low": self.closed_loop["success_ci"][0],
               "success_ci_high": self.closed_loop["success_ci"][1], "mean_return": self.closed_loop["mean_return"],
               "episodes": self.episodes}
        if self.compounding is not None:
            out.update(j_traj=self.compounding["j_traj"]["mean"],
                       action_error_on_policy=self.compounding["action_error_on_policy"]["mean"],
                       action_error_on_expert=self.compounding["action_error_on_expert"]["mean"],
                       action_error_ratio=self.compounding["action_error_ratio"]["value"],
                       time_to_divergence=self.compounding["time_to_divergence"]["mean"],
                       diverged_fraction=self.compounding["time_to_divergence"]["diverged_fraction"])
            for fraction, entry in self.compounding["deviation_at"].items():
                out[f"deviation_at_{round(100 * float(fraction))}pct"] = entry["mean"]
        return {prefix + key: value for key, value in out.items()}

    def table(self) -> str:
        """The short text table the CLI prints."""
        cl = self.closed_loop
        rows = [("task", f"{self.task}  (seeds {self.seed}..{self.seed + self.episodes - 1}, "
                         f"{self.num_envs} envs, {self.actions_per_chunk} action(s)/chunk)")]
        val = self.validation or {}
        rows.append(("validation loss", _fmt(val.get("val_loss"))
                     + (f"  (step {val['val_loss_step']}; best {_fmt(val.get('best_val_loss'))} at step "
                        f"{val.get('best_step')})" if val.get("val_loss") is not None else "  (not recorded)")))
        rows.append(("success rate", f"{cl['success_rate']:.3f}  [{cl['success_ci'][0]:.3f}, {cl['success_ci'][1]:.3f}]"
                                     f"  ({cl['successes']}/{cl['n']}, Wilson 95%)"))
        rows.append(("mean return", f"{cl['mean_return']:.3f}  [{cl['return_ci'][0]:.3f}, {cl['return_ci'][1]:.3f}]"
                                    "  (bootstrap 95%)"))
        rows.append(("mean length", f"{cl['mean_length']:.1f}"))
        if self.compounding is None:
            rows.append(("compounding error", f"n/a: {self.compounding_note}"))
        else:
            c = self.compounding
            rows.append(("J_traj", _mean_ci(c["j_traj"])))
            div = c["time_to_divergence"]
            diverged = round(div["diverged_fraction"] * cl["n"])
            rows.append(("time to divergence", f"{div['mean']:.1f}  [{div['ci'][0]:.1f}, {div['ci'][1]:.1f}] of "
                                               f"{div['horizon']} steps  (deviation > {div['threshold']:.3f}; "
                                               "never diverged = episode length)"))
            rows.append(("diverged", f"{div['diverged_fraction']:.3f}  [{div['diverged_ci'][0]:.3f}, "
                                     f"{div['diverged_ci'][1]:.3f}]  ({diverged}/{cl['n']}, Wilson 95%)"))
            for fraction, entry in c["deviation_at"].items():
                rows.append((f"deviation at {round(100 * float(fraction))}% (t={entry['t']})",
                             f"{_mean_ci(entry)}  (normalized state units)"))
            rows.append(("action error on-policy", _mean_ci(c["action_error_on_policy"])))
            rows.append(("action error on-expert", _mean_ci(c["action_error_on_expert"])))
            ratio = c["action_error_ratio"]
            rows.append(("on-policy / on-expert", f"{ratio['value']:.3f}  [{ratio['ci'][0]:.3f}, {ratio['ci'][1]:.3f}]"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.5f}"


def _mean_ci(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:.4f}  [{entry['ci'][0]:.4f}, {entry['ci'][1]:.4f}]"


def task_horizon(task: str, env_kwargs: dict[str, Any] | None) -> int:
    """The episode length of registered ``task`` as built with ``env_kwargs`` (every task takes ``horizon``)."""
    return int((env_kwargs or {}).get("horizon", envs.task_spec(task).horizon))


def camera_kwargs(image_shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """``envs.make`` arguments that render what a policy with ``image_shapes`` {"<camera>_image": (h, w, 3)}
    was trained on: the same cameras at the same size; {} for a state policy."""
    if not image_shapes:
        return {}
    not_cameras = [key for key in image_shapes if not key.endswith("_image")]
    sizes = {tuple(shape[:2]) for shape in image_shapes.values()}
    if not_cameras or len(sizes) > 1:
        raise UserError(f"the policy's images {dict(image_shapes)} cannot be rendered at evaluation: expected keys "
                        "'<camera>_image' of one size")
    (height, width), = sizes
    return {"cameras": tuple(key[:-len("_image")] for key in image_shapes), "image_size": (width, height)}


def resolve_task(task: str, env_kwargs: dict[str, Any] | None, with_expert: bool,
                 image_shapes: Mapping[str, Sequence[int]] | None = None):
    """(task name, env factory, expert or None, note) for a registered task, with the checks users need;
    the env renders the cameras of a policy with ``image_shapes`` (:func:`camera_kwargs`)."""
    spec = envs.task_spec(task)  # UserError for unknown names, listing the valid ones
    env_kwargs = dict(env_kwargs or {}) | camera_kwargs(image_shapes or {})
    if not spec.available and with_expert:
        raise UserError(f"task {spec.name} is unavailable: {spec.unavailable_reason}; "
                        "pass --no-expert to evaluate the policy alone, without the compounding-error metrics")
    expert = envs.make_expert(spec.name) if with_expert else None
    note = "" if with_expert else "expert rollouts turned off (--no-expert)"
    return spec.name, partial(envs.make, spec.name, **env_kwargs), expert, note


def evaluate(policy: Policy, task: str, config: EvalConfig, *, env_kwargs: dict[str, Any] | None = None,
             make_env: Callable[[], Any] | None = None, expert: Any = None, bootstrap_seed: int = 0,
             progress: bool = False, obs_keys: Sequence[str] = ()) -> EvalResult:
    """Roll ``policy`` out for ``config.episodes`` seeded episodes (``config.seeds``) in
    ``config.num_envs`` envs at once, executing ``config.actions_per_chunk`` actions of each chunk,
    and (``config.with_expert``) the task's expert from the same initial states. The checkpoint
    settings of ``config`` (``use_ema``, ``flow_steps``) and the video ones are for the caller that
    made ``policy``.

    ``make_env``/``expert`` replace the registry's env factory and expert (``task`` is then only a
    label, and the horizon of ``deviation_at`` is the longest episode pair): tests use this for envs
    with known answers. The policy runs in eval mode (restored after). A policy with images is
    evaluated in envs that render its cameras at its image size, its low-dim observation the
    concatenation of ``obs_keys`` (the training data's, in order; see :class:`PolicyController`).
    """
    episodes, num_envs, seed = int(config.episodes), int(config.num_envs), int(config.seed)
    actions_per_chunk, with_expert = config.actions_per_chunk, config.with_expert
    check_actions_per_chunk(actions_per_chunk, policy.chunk)
    if make_env is None:
        task, make_env, registry_expert, note = resolve_task(task, env_kwargs, with_expert, policy.image_shapes)
        expert = registry_expert if expert is None else expert
        horizon = task_horizon(task, env_kwargs)
    else:
        note = "" if with_expert and expert is not None else "no expert given"
        horizon = None
    if not with_expert:
        expert = None
    check_spaces(make_env, policy, task, obs_keys)

    episode_seeds = [seed + i for i in range(episodes)]
    started = time.perf_counter()
    was_training = policy.training
    policy.eval()
    try:
        bar = _progress_bar(episodes * (2 if expert is not None else 1), task, progress)
        policy_runs = rollout(make_env, partial(PolicyController, policy, actions_per_chunk=actions_per_chunk,
                                                obs_keys=obs_keys),
                              episode_seeds, num_envs, on_episode=lambda _: bar.update(1))
        records = [episode_record(t) for t in policy_runs]
        compounding, env_steps = None, sum(t.length for t in policy_runs)
        if expert is not None:
            act_dim = policy.act_dim
            expert_runs = rollout(make_env, lambda k: ExpertController(expert, act_dim), episode_seeds, num_envs,
                                  on_episode=lambda _: bar.update(1))
            env_steps += sum(t.length for t in expert_runs)
            compounding = _compounding(policy, expert, policy_runs, expert_runs, records, bootstrap_seed, horizon,
                                       obs_keys)
        bar.close()
    finally:
        policy.train(was_training)
    return EvalResult(
        task=task, env_kwargs=dict(env_kwargs or {}), seed=seed, episodes=episodes, num_envs=num_envs,
        actions_per_chunk=actions_per_chunk, closed_loop=closed_loop_summary(records, bootstrap_seed),
        records=records, compounding=compounding, compounding_note=note, env_steps=env_steps,
        elapsed_s=round(time.perf_counter() - started, 3))


def _compounding(policy: Policy, expert, policy_runs: list[Trajectory], expert_runs: list[Trajectory],
                 records: list[dict[str, Any]], bootstrap_seed: int, horizon: int | None,
                 obs_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Relabel every visited state with both the policy (fresh prediction, on its observations) and
    the expert (on the flat states), in bulk. Deviations are in units of the policy's observation
    normalizer when it observes the flat state; a policy that observes other keys (images, robot
    state) knows no scale of the state, so the spread of the states its expert runs visited is the unit."""
    policy_states = [t.states[:-1] for t in policy_runs]
    expert_states = [t.states[:-1] for t in expert_runs]
    policy_at_policy = _split(policy_actions(policy, [_but_last(t.obs) for t in policy_runs], obs_keys=obs_keys),
                              policy_states)
    policy_at_expert = _split(policy_actions(policy, [_but_last(t.obs) for t in expert_runs], obs_keys=obs_keys),
                              expert_states)
    expert_at_policy = _split(expert.act(np.concatenate(policy_states)), policy_states)
    expert_at_expert = _split(expert.act(np.concatenate(expert_states)), expert_states)
    if isinstance(policy_runs[0].obs, dict):
        visited = np.concatenate([t.states for t in expert_runs]).astype(np.float64)
        obs_mean, obs_std = visited.mean(axis=0), np.maximum(visited.std(axis=0), 1e-3)
    else:
        obs_mean = policy.obs_normalizer.mean.double().cpu().numpy()
        obs_std = policy.obs_normalizer.std.double().cpu().numpy()
    act_std = policy.action_normalizer.std.double().cpu().numpy()
    per_episode = []
    for i, (p, e) in enumerate(zip(policy_runs, expert_runs)):
        result = episode_compounding(p, e, obs_mean, obs_std, act_std, policy_at_policy[i], expert_at_policy[i],
                                     policy_at_expert[i], expert_at_expert[i])
        per_episode.append(result)
        expert_record = episode_record(e)
        records[i].update(j_traj=result["j_traj"], action_error_on_policy=result["action_error_on_policy"],
                          action_error_on_expert=result["action_error_on_expert"],
                          final_deviation=float(result["deviation"][-1]),
                          time_to_divergence=result["time_to_divergence"], diverged=result["diverged"],
                          expert_return=expert_record["return"],
                          expert_success=expert_record["success"], expert_length=expert_record["length"])
    if horizon is None:  # an env from make_env: the longest episode stands in for its horizon
        horizon = max(t.length for t in [*policy_runs, *expert_runs])
    summary = compounding_summary(per_episode, bootstrap_seed, horizon)
    n = len(expert_runs)
    expert_successes = sum(r["expert_success"] for r in records)
    summary["expert"] = {"success_rate": expert_successes / n, "success_ci": list(wilson_interval(expert_successes, n)),
                         "mean_return": float(np.mean([r["expert_return"] for r in records]))}
    return summary


def _but_last(obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
    """A trajectory's observations without the last (after the final step), array or dict of arrays."""
    return {key: value[:-1] for key, value in obs.items()} if isinstance(obs, dict) else obs[:-1]


def _split(rows: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    return np.split(np.asarray(rows, dtype=np.float64), np.cumsum([len(x) for x in like])[:-1])


@torch.no_grad()
def policy_actions(policy: Policy, observations: list, batch_size: int = 4096, seed: int = 0,
                   obs_keys: Sequence[str] = ()) -> np.ndarray:
    """The policy's action now (first chunk row, a fresh prediction) at every step of each observation
    sequence ``(T_i, D)`` (or dict of ``(T_i, ...)`` arrays: the low-dim ``obs_keys`` and the
    policy's images, as :class:`PolicyController` reads them), with the history padded by the
    sequence's first observation as in training (:func:`demos.history.history_indices`);
    ``(sum T_i, A)``. Batches run on the policy's device and the actions come back in one copy. A
    policy that samples draws from one generator seeded ``seed``: the same states give the same
    actions, whatever ``num_envs`` visited them with."""
    device = module_device(policy)
    generator = torch.Generator().manual_seed(seed)
    keys = low_dim_keys(policy, obs_keys)
    low_dim = [low_dim_observation(obs, keys) if isinstance(obs, dict) else obs for obs in observations]
    starts = np.cumsum([0] + [len(obs) for obs in low_dim])[:-1]
    rows = np.concatenate([start + history_indices(len(obs), policy.history) for start, obs in zip(starts, low_dim)])
    flat = torch.as_tensor(np.concatenate(low_dim), dtype=torch.float32)
    images = {key: np.concatenate([obs[key] for obs in observations]) for key in policy.image_shapes}
    out = []
    for start in range(0, len(rows), batch_size):
        index = rows[start:start + batch_size]  # (B, H) rows of the concatenated sequences
        extra = {"images": {key: torch.from_numpy(value[index]).to(device) for key, value in images.items()}} \
            if images else {}
        out.append(policy.predict(flat[torch.from_numpy(index)].to(device), generator=generator, **extra)[:, 0])
    return torch.cat(out).double().cpu().numpy()


def check_spaces(make_env: Callable[[], Any], policy: Policy, task: str, obs_keys: Sequence[str] = ()) -> None:
    """One UserError line unless the env's observations and actions are the policy's (for dict
    observations: the low-dim ``obs_keys`` add up to its observation, its images are there at its size)."""
    env = make_env()
    try:
        space, act_shape = env.observation_space, env.action_space.shape
    finally:
        env.close()
    obs_shape = space.shape
    if isinstance(space, gymnasium.spaces.Dict):
        low_dim = low_dim_keys(policy, obs_keys)
        missing = [key for key in [*low_dim, *policy.image_shapes] if key not in space.spaces]
        if missing:
            raise UserError(f"the policy reads observation key(s) {', '.join(missing)} that task {task} does not give "
                            f"(it gives {', '.join(space.spaces)})")
        obs_shape = (sum(int(np.prod(space[key].shape)) for key in low_dim),)
        for key, shape in policy.image_shapes.items():
            if space[key].shape != shape:
                raise UserError(f"the policy takes {key} of shape {shape}, task {task} renders {space[key].shape}")
    if obs_shape != (policy.obs_dim,) or act_shape != (policy.act_dim,):
        raise UserError(f"the policy takes {policy.obs_dim}-d observations and gives {policy.act_dim}-d actions, but "
                        f"task {task} has observations {obs_shape} and actions {act_shape}; evaluate it on the task "
                        "it was trained on (--task)")


def _progress_bar(total: int, task: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"eval {task}", unit="episode", disable=not enabled)


def make_evaluator(task: str, config: EvalConfig, **kwargs: Any) -> Callable[[Policy, int], dict[str, float]]:
    """An ``evaluator(policy, step) -> metrics`` for :func:`dopr_robot.train.train` (flat ``eval_*``
    numbers): :func:`evaluate` with ``config`` and the keyword arguments ``kwargs``."""

    def evaluator(policy: Policy, step: int) -> dict[str, float]:
        return evaluate(policy, task, config, **kwargs).metrics()

    return evaluator


def eval_record(path: str | Path) -> dict[str, Any] | None:
    """The evaluation JSON at ``path`` (a dict with ``"format": FORMAT``), or None for anything else."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def check_eval_destination(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse, in one line and before any rollout, a destination ``eval`` must not write its JSON to.

    The rule: an existing evaluation JSON written by ``eval`` (``"format"`` is :data:`FORMAT`, no
    ``"cell"`` record) is this command's own output and is replaced, since rerunning an evaluation is
    normal. An evaluation that ``compare`` wrote for a cell of its grid (it has a ``"cell"`` record)
    belongs to that comparison, and anything else (demonstrations, a checkpoint, any other file) is
    not ours: both are replaced only with ``overwrite``. An empty path, a directory, or a place that
    cannot be written is refused always (:func:`dopr_robot.atomic.check_destination`).
    """
    if not overwrite and Path(path).is_file() and CELL_KEY in (eval_record(path) or {}):
        raise UserError(f"{path} is the evaluation of a comparison's cell (compare wrote it and reads it); write this "
                        f"evaluation elsewhere with --out FILE, or pass --overwrite to replace it")
    return check_destination(path, overwrite=overwrite, what="evaluation JSON written by eval", ours=_written_by_eval)


def _written_by_eval(path: Path) -> bool:
    record = eval_record(path)
    return record is not None and CELL_KEY not in record


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write ``data`` as strict JSON (NaN/Inf as null), atomically."""
    return write_json_atomic(path, data)


