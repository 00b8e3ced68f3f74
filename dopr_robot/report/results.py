"""Result files -> rows: one dict per finished run, read from the run's own files only.

A run directory ``DIR/runs/<task>/<optimizer>/seed<k>/`` holds ``eval.json`` (the closed-loop
evaluation, written last: the run is finished when it exists), ``config.json`` (the resolved
TrainConfig) and ``metrics.jsonl``. A row holds the CSV columns (:data:`COLUMNS`) plus what tables
and plots need beyond one number per run: the per-episode ``records``, the deviation curve, the
dataset the run trained on and its config (keys starting with ``_``).

``success_rate`` is the final checkpoint's (the comparison's own evaluation); ``best_eval_success_rate``
and ``best_eval_step`` are the best closed-loop success over the evaluations during training
(``--eval-every``, logged as ``eval_success_rate`` in metrics.jsonl, on the same evaluation episodes)
and its earliest step: robomimic's "best checkpoint" metric. None for runs without ``--eval-every``.

Older eval.json files may lack newer fields (dataset provenance, time to divergence, deviation at a
fraction of the horizon); those read as None and the report says "n/a" or "unknown".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dopr_robot.errors import UserError
from dopr_robot.optim import base_of, is_dopr
from dopr_robot.run_log import METRICS_NAME, read_metrics

COLUMNS = ["task", "optimizer", "seed", "remedy", "val_loss", "best_val_loss", "success_rate", "success_ci_low",
           "success_ci_high", "best_eval_success_rate", "best_eval_step", "mean_return", "j_traj", "time_to_divergence", "diverged_fraction",
           "divergence_threshold", "deviation_at_half", "deviation_at_half_t", "action_error_on_policy",
           "action_error_on_expert", "action_error_ratio", "eval_episodes", "eval_seed", "train_steps",
           "demo_episodes", "demo_noise", "expert_labels", "wall_time_s"]

DEVIATION_FRACTION = "0.5"  # the summary's deviation column: the deviation at 50% of the horizon


def load_rows(out: str | Path) -> list[dict[str, Any]]:
    """One row per finished run under ``out/runs``, ordered by task, optimizer (each base beside its
    DoPr variant, see :func:`optimizer_order`) and seed."""
    rows = [load_run(path) for path in sorted(Path(out).glob("runs/*/*/seed*/eval.json"))]
    order = optimizer_order(r["optimizer"] for r in rows)
    rows.sort(key=lambda r: (r["task"], order.index(r["optimizer"]), r["seed"]))
    return rows


def load_run(eval_file: str | Path) -> dict[str, Any]:
    """The row of one run from its ``eval.json`` (and ``config.json`` beside it, when present)."""
    eval_file = Path(eval_file)
    try:
        result = json.loads(eval_file.read_text())
        cell, closed = result["cell"], result["closed_loop"]
        task, optimizer, seed = cell["task"], cell["optimizer"], int(cell["seed"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{eval_file} is not a comparison cell's evaluation ({type(err).__name__}: {err}); "
                        "rerun `compare` on this directory to redo the cell") from None
    comp = result.get("compounding") or {}
    validation = result.get("validation") or {}
    checkpoint = result.get("checkpoint") or {}
    dataset = checkpoint.get("dataset")
    metadata = (dataset or {}).get("metadata") or {}
    divergence = comp.get("time_to_divergence") or {}
    at_half = (comp.get("deviation_at") or {}).get(DEVIATION_FRACTION) or {}
    config_file = eval_file.parent / "config.json"
    best_eval = best_evaluation(evaluation_curve({"_run_dir": str(eval_file.parent)}))
    return {
        "task": task, "optimizer": optimizer, "seed": seed, "remedy": cell.get("remedy", "none"),
        "val_loss": validation.get("val_loss"), "best_val_loss": validation.get("best_val_loss"),
        "success_rate": closed["success_rate"], "success_ci_low": closed["success_ci"][0],
        "success_ci_high": closed["success_ci"][1], "best_eval_success_rate": best_eval[0],
        "best_eval_step": best_eval[1], "mean_return": closed.get("mean_return"),
        "j_traj": _get(comp, "j_traj", "mean"),
        "time_to_divergence": divergence.get("mean"), "diverged_fraction": divergence.get("diverged_fraction"),
        "divergence_threshold": divergence.get("threshold"),
        "deviation_at_half": at_half.get("mean"), "deviation_at_half_t": at_half.get("t"),
        "action_error_on_policy": _get(comp, "action_error_on_policy", "mean"),
        "action_error_on_expert": _get(comp, "action_error_on_expert", "mean"),
        "action_error_ratio": _get(comp, "action_error_ratio", "value"),
        "eval_episodes": result.get("episodes"), "eval_seed": result.get("seed"),
        # A dagger:ROUNDS cell's checkpoint is its last round's: its steps are that round's, its dataset the
        # aggregate; the cell trained train_steps_total steps on the aggregate's initial demonstrations.
        "train_steps": cell.get("train_steps_total", checkpoint.get("step")),
        "demo_episodes": _demonstrations(dataset, metadata), "demo_noise": metadata.get("noise"),
        "expert_labels": cell.get("expert_labels"),  # demonstration transitions + relabelled states
        "wall_time_s": cell.get("wall_time_s"),
        # beyond the CSV: what tables and plots need
        "_records": result.get("records") or [],
        "_deviation": _get(comp, "state_deviation", "mean"),
        "_horizon": divergence.get("horizon"),
        "_checkpoint": checkpoint,
        "_dataset": dataset,
        "_config": json.loads(config_file.read_text()) if config_file.exists() else None,
        "_run_dir": str(eval_file.parent),
    }


def _demonstrations(dataset: dict[str, Any] | None, metadata: dict[str, Any]) -> int | None:
    """The demonstration episodes a run trained on: its dataset's episodes, less a DAgger aggregate's
    relabelled ones (``round`` rounds of ``episodes_per_round``)."""
    episodes = (dataset or {}).get("episodes")
    if episodes is not None and metadata.get("created_by") == "dopr-robot dagger":
        episodes -= int(metadata["round"]) * int(metadata["episodes_per_round"])
    return episodes


def optimizer_order(names: Any) -> list[str]:
    """Distinct optimizer names with each base beside its DoPr variant: bases alphabetically, each
    followed by ``dopr-<base>`` (adamw, dopr-adamw, muon, dopr-muon, ...)."""
    return sorted(set(names), key=lambda name: (base_of(name), is_dopr(name)))


def episode_values(row: dict[str, Any], key: str) -> dict[int, float] | None:
    """Per-episode values of ``key`` keyed by evaluation reset seed, or None when any episode lacks
    them (an older eval.json, or a task without an expert).

    ``time_to_divergence`` of an episode that never diverged is its censoring length (the evaluation
    writes it so); should a record hold None there with ``diverged`` false, the horizon stands in.
    """
    records = row["_records"]
    if not records:
        return None
    values = {}
    for record in records:
        value = record.get(key)
        if value is None and key == "time_to_divergence" and record.get("diverged") is False:
            value = row["_horizon"]
        if value is None or not math.isfinite(float(value)):
            return None
        values[int(record["seed"])] = float(value)
    return values


def deviation_curve(row: dict[str, Any]) -> np.ndarray | None:
    """The run's mean state deviation from the expert at each t, as its evaluation stored it (the
    mean of :func:`dopr_robot.evaluate.metrics.deviation_band`); None without an expert."""
    curve = row["_deviation"]
    return None if curve is None else np.asarray([math.nan if v is None else v for v in curve], dtype=np.float64)


def validation_curve(row: dict[str, Any]) -> dict[int, float]:
    """Validation loss by training step, from the run's metrics.jsonl (empty when absent)."""
    entries = read_metrics(Path(row["_run_dir"]) / METRICS_NAME)
    return {e["step"]: e["val_loss"] for e in entries if e.get("val_loss") is not None}


def evaluation_curve(row: dict[str, Any]) -> dict[int, float]:
    """Closed-loop success rate by training step (``--eval-every``), from the run's metrics.jsonl
    (empty when the run did not evaluate during training). A resumed run's log was cut back to its
    checkpoint before it went on, so this is the whole run's, each step once."""
    entries = read_metrics(Path(row["_run_dir"]) / METRICS_NAME)
    return {e["step"]: e["eval_success_rate"] for e in entries if e.get("eval_success_rate") is not None}


def best_evaluation(curve: dict[int, float]) -> tuple[float | None, int | None]:
    """(the best success rate of an evaluation curve, its earliest step), or (None, None) for none."""
    if not curve:
        return None, None
    best = max(curve.values())
    return best, min(step for step, rate in curve.items() if rate == best)


def _get(mapping: dict[str, Any], key: str, field: str) -> Any:
    entry = mapping.get(key)
    return entry.get(field) if isinstance(entry, dict) else None
