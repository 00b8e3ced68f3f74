"""Closed-loop evaluation that can be trusted: seeded, batched, with intervals and compounding error.

Public API::

    evaluate(policy, task, config: EvalConfig, *, env_kwargs=None, progress=False, ...) -> EvalResult
    evaluate_checkpoint(run_dir_or_file, config: EvalConfig, *, task=None, device="auto",
                        progress=False) -> EvalResult           # + validation loss, checkpoint record
    make_evaluator(task, config: EvalConfig, **evaluate_kwargs) -> (policy, step) -> dict  # for train()
    write_json(data, path)                                   # atomic (temp file + os.replace)

Episode ``i`` always starts from ``reset(seed=seed + i)``, whatever ``num_envs`` is; the default
first seed is ``envs.seeds.POLICY_EVAL`` (every seed range is in ``envs/seeds.py``).

Where things are: ``evaluation.py`` (:func:`evaluate`, :class:`EvalResult`, the relabelling of visited
states), ``checkpoints.py`` (evaluating a run's checkpoint), ``rollout.py`` (policies in the seeded rollout
loop of ``envs/rollout.py``), ``metrics.py`` (intervals, the compounding-error metrics), ``plots.py``, ``video.py``.
"""

from dopr_robot.evaluate.checkpoints import checkpoint_task, evaluate_checkpoint, validation_record
from dopr_robot.evaluate.evaluation import (
    DEFAULT_EVAL_SEED,
    FORMAT,
    EvalResult,
    check_eval_destination,
    eval_record,
    evaluate,
    make_evaluator,
    policy_actions,
    resolve_task,
    task_horizon,
    write_json,
)
from dopr_robot.evaluate.metrics import bootstrap_interval, wilson_interval

__all__ = ["DEFAULT_EVAL_SEED", "FORMAT", "EvalResult", "bootstrap_interval", "check_eval_destination",
           "checkpoint_task", "eval_record", "evaluate",
           "evaluate_checkpoint", "make_evaluator", "policy_actions", "resolve_task", "task_horizon",
           "validation_record", "wilson_interval", "write_json"]
