"""dopr-robot train: behavior cloning from demonstrations, any policy, any optimizer."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from dopr_robot.config import (
    EvalConfig,
    TrainConfig,
    add_config_arguments,
    config_from_dict,
    config_to_dict,
    flags_named,
    given_options,
    nested,
    resolve_config,
)
from dopr_robot.errors import UserError
from dopr_robot.grid import add_execution_arguments
from dopr_robot.run_dir import read_saved

EVAL_EPISODES = 10  # closed-loop episodes of each evaluation during training (--eval-every)
HELP = "train a BC policy (config.json, metrics.jsonl and checkpoint.pt in the run directory)"


@dataclass(frozen=True)
class PeriodicEval:
    """The evaluations of ``--eval-every``: compare's ``--eval-*`` options that a periodic evaluation
    reads, with the same names. It evaluates the policy training holds (its EMA weights and flow
    sampler), on the data's task, without the expert."""

    eval: EvalConfig = nested(
        EvalConfig, factory=lambda: EvalConfig(episodes=EVAL_EPISODES, with_expert=False), prefix="eval-",
        exclude=("with_expert", "use_ema", "flow_steps", "size", "fps"),
        why_excluded="a periodic evaluation runs the training policy, without the expert, and makes no video",
        help="with --eval-every: the closed-loop evaluations during training (as compare's --eval-*)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, TrainConfig)
    add_config_arguments(parser, PeriodicEval, defaults={"eval.episodes": EVAL_EPISODES}, config_file=False)
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint, with its saved config")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    add_execution_arguments(parser, ("device", "progress"))  # not config fields: a run resumes on another device


def run(args: argparse.Namespace) -> int:
    from dopr_robot.train import train

    if args.resume is not None:
        config = _resumed_config(args)
    else:
        config = resolve_config(TrainConfig, args)
        _check_dopr_options(config)
    evaluator, eval_settings = _evaluator(config, args)
    result = train(config, evaluator=evaluator, resume=args.resume is not None, overwrite=args.overwrite,
                   progress=not args.no_progress, device=args.device, eval_settings=eval_settings)
    val = f"{result.final_val_loss:.5f}" if result.final_val_loss is not None else "n/a (no validation episodes)"
    numbers = f"train loss {result.final_train_loss:.5f}, validation loss {val}"
    if args.resume is not None and result.steps_run == 0:
        print(f"{result.run_dir} had already finished ({result.step} steps): {numbers}")
    else:
        print(f"trained {result.step} steps: {numbers}")
    if result.best_eval is not None:
        print(f"best closed-loop success rate {result.best_eval['eval_success_rate']:.3f} at step {result.best_eval['step']}")
    print(f"run directory: {result.run_dir}")
    return 0


def _resumed_config(args: argparse.Namespace) -> TrainConfig:
    """The saved config of the run in ``--resume``; options given again must agree with it."""
    saved = args.resume / "config.json"
    if not saved.is_file():
        raise UserError(f"cannot resume: {saved} does not exist")
    if "out" in vars(args) and Path(args.out).resolve() != args.resume.resolve():
        raise UserError(f"--resume continues {args.resume} in place; drop --out {args.out} (to continue elsewhere, "
                        "copy the run directory there and resume the copy)")
    try:
        values = json.loads(saved.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"cannot resume: {saved} is not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise UserError(f"cannot resume: {saved} must hold a JSON object of options")
    # Keys unknown to this version are one clear error; keys added since keep their defaults.
    config = config_from_dict(TrainConfig, {**values, "out": str(args.resume)}, where=str(saved))
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and k != "out"}
    changed = sorted(k for k, v in given.items() if values.get(k, getattr(config, k)) != v)
    if changed:
        raise UserError(f"--resume continues the saved config; drop {', '.join('--' + c.replace('_', '-') for c in changed)} "
                        "or start a new run directory")
    return config


def _evaluator(config: TrainConfig, args: argparse.Namespace):
    """With ``--eval-every``: closed-loop evaluation on the task the demonstrations came from, with the
    ``--eval-*`` settings given (executing ``--eval-actions-per-chunk`` actions of each chunk, ...), or on
    a resume the ones the run saved; returned with those settings in their JSON form (None, None without)."""
    given = given_options(PeriodicEval, args)
    if not config.eval_every:
        if given:
            raise UserError(f"{', '.join(given.values())} {'sets' if len(given) == 1 else 'set'} the evaluations "
                            "of --eval-every; give --eval-every N, or drop it")
        return None, None
    from dopr_robot.train import EVAL_SETTINGS_FILE  # imported by run() already

    chosen = {name.removeprefix("eval."): getattr(args, name) for name in given}
    saved_file = args.resume / EVAL_SETTINGS_FILE if args.resume is not None else None
    if saved_file is not None and saved_file.is_file():  # a run saved before the file existed takes what is given
        saved = read_saved(saved_file)
        changed = [given[f"eval.{name}"] for name, value in chosen.items() if saved.get(name) != value]
        if changed:
            raise UserError(f"--resume evaluates with the run's saved {saved_file}; drop {', '.join(changed)} "
                            "or start a new run directory")
        chosen = saved
    else:
        saved_file = None
    with flags_named(PeriodicEval):
        periodic = config_from_dict(PeriodicEval, {"eval": {"episodes": EVAL_EPISODES, **chosen}},
                                    where=str(saved_file or ""))
    settings = periodic.eval
    if settings.actions_per_chunk > config.chunk:  # refused before training, not at the first evaluation
        raise UserError(f"--eval-actions-per-chunk {settings.actions_per_chunk} exceeds --chunk {config.chunk}: a "
                        "plan holds --chunk actions; give at most that many")
    import demos
    from dopr_robot.evaluate import make_evaluator

    dataset = demos.load(config.data, obs_keys=config.obs_keys or None)
    if dataset.task is None:
        raise UserError(f"--eval-every evaluates on the data's task, and {config.data} names none (no env_args); "
                        "drop --eval-every and evaluate the checkpoint with `dopr-robot eval --task NAME`")
    evaluator = make_evaluator(dataset.task, settings, env_kwargs=dataset.env_kwargs, obs_keys=dataset.obs_keys)
    return evaluator, config_to_dict(periodic)["eval"]


def _check_dopr_options(config: TrainConfig) -> None:
    """A single run given DoPr's own options on a plain optimizer: say so (a grid applies them to its
    dopr-* cells only, so the config itself accepts them)."""
    from dopr_robot.optim import dopr_only_arguments, is_dopr

    misplaced = dopr_only_arguments(config.optimizer_options)
    if misplaced and not is_dopr(config.optimizer):
        raise UserError(f"--optimizer-options {', '.join(misplaced)}: "
                        f"{'a DoPr option' if len(misplaced) == 1 else 'DoPr options'} that --optimizer "
                        f"{config.optimizer} would ignore; use --optimizer dopr-{config.optimizer} or drop it")
