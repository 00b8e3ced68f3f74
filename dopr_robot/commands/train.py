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
    flags_named,
    given_options,
    nested,
    resolve_config,
)
from dopr_robot.errors import UserError
from dopr_robot.grid import add_execution_arguments

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
    evaluator = _evaluator(config, args)
    result = train(config, evaluator=evaluator, resume=args.resume is not None, overwrite=args.overwrite,
                   progress=not args.no_progress, device=args.device)
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
    ``--eval-*`` settings given (executing ``--eval-actions-per-chunk`` actions of each chunk, ...)."""
    given = given_options(PeriodicEval, args)
    if not config.eval_every:
        if given:
            raise UserError(f"{', '.join(given.values())} {'sets' if len(given) == 1 else 'set'} the evaluations "
                            "of --eval-every; give --eval-every N, or drop it")
        return None
    with flags_named(PeriodicEval):
        chosen = {name.removeprefix("eval."): getattr(args, name) for name in given}
        settings = config_from_dict(PeriodicEval, {"eval": {"episodes": EVAL_EPISODES, **chosen}}).eval
    if settings.actions_per_chunk > config.chunk:  # refused before training, not at the first evaluation
        raise UserError(f"--eval-actions-per-chunk {settings.actions_per_chunk} exceeds --chunk {config.chunk}: a "
                        "plan holds --chunk actions; give at most that many")
    import demos
    from dopr_robot.evaluate import make_evaluator

    dataset = demos.load(config.data, obs_keys=config.obs_keys or None)
    if dataset.task is None:
        raise UserError(f"--eval-every evaluates on the data's task, and {config.data} names none (no env_args); "
                        "drop --eval-every and evaluate the checkpoint with `dopr-robot eval --task NAME`")
    return make_evaluator(dataset.task, settings, env_kwargs=dataset.env_kwargs, obs_keys=dataset.obs_keys)


def _check_dopr_options(config: TrainConfig) -> None:
    """A single run given DoPr's own options on a plain optimizer: say so (a grid applies them to its
    dopr-* cells only, so the config itself accepts them)."""
    from dopr_robot.optim import dopr_only_arguments, is_dopr

    misplaced = dopr_only_arguments(config.optimizer_options)
    if misplaced and not is_dopr(config.optimizer):
        raise UserError(f"--optimizer-options {', '.join(misplaced)}: "
                        f"{'a DoPr option' if len(misplaced) == 1 else 'DoPr options'} that --optimizer "
                        f"{config.optimizer} would ignore; use --optimizer dopr-{config.optimizer} or drop it")
