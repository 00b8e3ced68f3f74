"""Evaluate a training run's checkpoint: which task, the run's validation loss, what was evaluated.

:func:`evaluate_checkpoint` loads a checkpoint (run directory or ``checkpoint.pt``), evaluates it on
the task its demonstrations came from (:func:`checkpoint_task`) and attaches the run's validation
loss (:func:`validation_record`) and a record of the checkpoint (step, policy, optimizer, and the
dataset it was trained on) to the :class:`~dopr_robot.evaluate.evaluation.EvalResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import envs
from envs import robosuite_tasks
from dopr_robot.config import EvalConfig
from dopr_robot.errors import UserError
from dopr_robot.evaluate.evaluation import EvalResult, evaluate
from dopr_robot.run_log import METRICS_NAME, read_metrics


def checkpoint_task(checkpoint: dict[str, Any], task: str | None) -> tuple[str, dict[str, Any]]:
    """The task (and env kwargs) to evaluate a checkpoint on: ``task`` if given, else its dataset's."""
    dataset = checkpoint.get("dataset") or {}
    if task is not None:
        return task, dict(dataset.get("env_kwargs") or {}) if dataset.get("task") == task else {}
    if not dataset.get("task"):
        raise UserError("the checkpoint was trained on data without env_args: pass --task NAME")
    if ((dataset.get("metadata") or {}).get("env_type") == robosuite_tasks.ROBOMIMIC_ROBOSUITE_TYPE
            and dataset["task"] not in envs.list_tasks()):
        reason = robosuite_tasks.unknown_env_reason(dataset["task"])
        raise UserError(f"the demonstrations' env_args name the robosuite env {dataset['task']!r}: {reason}; "
                        "pass --task NAME to evaluate on another")
    return dataset["task"], dict(dataset.get("env_kwargs") or {})


def validation_record(run_or_file: str | Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The run's validation loss at the checkpoint's step (metrics.jsonl), and its best (the checkpoint)."""
    path = Path(run_or_file)
    step = checkpoint.get("step")
    val_loss, val_step = None, None
    for entry in read_metrics((path if path.is_dir() else path.parent) / METRICS_NAME):  # a line cut by a kill is skipped
        if "val_loss" in entry and (step is None or entry["step"] <= step):
            val_loss, val_step = float(entry["val_loss"]), entry["step"]
    best = checkpoint.get("best") or {}
    return {"val_loss": val_loss, "val_loss_step": val_step, "best_val_loss": best.get("val_loss"),
            "best_step": best.get("step"), "checkpoint_step": step}


def evaluate_checkpoint(run_or_file: str | Path, config: EvalConfig, *, task: str | None = None,
                        device: str | torch.device = "auto", progress: bool = False) -> EvalResult:
    """Load a checkpoint (run directory or file) onto ``device`` (``auto``: CUDA when available;
    the environments stay on the CPU), its EMA weights unless ``config.use_ema`` is off and its flow
    sampler with ``config.flow_steps``; evaluate it with ``config`` on ``task`` (default: its
    demonstrations' task, :func:`checkpoint_task`), and attach its validation loss and a
    record of it: path, step, EMA or not, policy, optimizer, history, chunk, and ``dataset`` (what
    training stored about its data: episodes, splits, source, task, collection metadata)."""
    from dopr_robot.checkpoint import checkpoint_path, load_checkpoint, policy_from_checkpoint

    checkpoint = load_checkpoint(run_or_file)
    task, env_kwargs = checkpoint_task(checkpoint, task)
    use_ema = config.use_ema
    policy = policy_from_checkpoint(checkpoint, use_ema=use_ema, device=device, flow_steps=config.flow_steps)
    result = evaluate(policy, task, config, env_kwargs=env_kwargs, progress=progress,
                      obs_keys=(checkpoint.get("dataset") or {}).get("obs_keys") or ())
    result.validation = validation_record(run_or_file, checkpoint)
    result.checkpoint = {"path": str(checkpoint_path(run_or_file)), "step": checkpoint.get("step"),
                         "use_ema": use_ema and checkpoint.get("ema") is not None,
                         "policy": checkpoint["policy"]["name"], "optimizer": checkpoint["config"].get("optimizer"),
                         "history": checkpoint["policy"]["history"], "chunk": checkpoint["policy"]["chunk"],
                         "dataset": checkpoint.get("dataset"), "flow_steps": getattr(policy, "flow_steps", None)}
    return result
