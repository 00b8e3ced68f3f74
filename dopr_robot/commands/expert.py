"""dopr-robot expert: train, export and evaluate the SB3 locomotion experts (``dopr_robot.sb3_experts``)."""

from __future__ import annotations

import argparse
import shlex

HELP = "train (resumably), export and evaluate the stable-baselines3 locomotion experts"


# Filled by the command itself: --hp repeats (a config option takes one value); the command line is recorded.
TRAIN_OWN_FIELDS = ("overrides", "command")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dopr_robot.config import add_config_arguments
    from dopr_robot.sb3_experts import ExpertTrainConfig

    sub = parser.add_subparsers(dest="expert_command", metavar="ACTION")

    train = sub.add_parser("train", help="train an expert, checkpointing so that --resume can continue it")
    add_config_arguments(train, ExpertTrainConfig, exclude=TRAIN_OWN_FIELDS, config_file=False)
    train.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter (JSON value), repeatable")
    train.add_argument("--export-to", default=None, help="when training ends, export the best model here (actor + manifest)")
    train.add_argument("--overwrite", action="store_true", help="with --export-to: replace the expert already there")
    train.set_defaults(resume=False)  # read by the CLI's Ctrl-C hint whether or not --resume was given

    export = sub.add_parser("export", help="export a run's model as a torch actor + manifest.json (no SB3 needed to use it)")
    export.add_argument("--run", required=True, help="run folder written by `expert train`")
    export.add_argument("--to", default=None,
                        help="destination folder (default: envs/experts/weights/<task>/ while it holds no expert; "
                             "replacing the shipped expert takes --to and --overwrite)")
    export.add_argument("--which", default="best", help="best (best periodic evaluation) or latest (newest checkpoint)")
    export.add_argument("--episodes", type=int, default=20, help="seeded episodes for the manifest's evaluation")
    export.add_argument("--note", default="", help="free text stored in manifest.json (e.g. why training stopped)")
    export.add_argument("--overwrite", action="store_true", help="replace the expert already in --to")

    evaluate = sub.add_parser("eval", help="mean ± std return and success rate of an expert over seeded episodes")
    evaluate.add_argument("--task", required=True, help="locomotion task, e.g. Hopper-v5")
    evaluate.add_argument("--expert", default=None, help="exported expert folder or SB3 .zip of a run (default: the shipped expert)")
    evaluate.add_argument("--episodes", type=int, default=20, help="number of episodes")
    evaluate.add_argument("--seed", type=int, default=None,
                          help="first episode seed (seeds seed..seed+episodes-1; default: the start of the expert-manifest "
                               "range envs.seeds.EXPERT_MANIFEST, 10000, the seeds of manifest.json's evaluation)")


def _train_command(args: argparse.Namespace) -> str:
    """The command line as given (options of the config, then --hp, --export-to, --overwrite)."""
    from dopr_robot.config import given_options
    from dopr_robot.sb3_experts import ExpertTrainConfig

    parts = ["dopr-robot", "expert", "train"]
    for dest, flag in given_options(ExpertTrainConfig, args, exclude=TRAIN_OWN_FIELDS).items():
        value = getattr(args, dest)
        if isinstance(value, bool):
            parts += [flag] if value else []
        else:
            parts += [flag, str(value)]
    for override in args.hp:
        parts += ["--hp", override]
    if args.export_to:
        parts += ["--export-to", args.export_to] + (["--overwrite"] if args.overwrite else [])
    return shlex.join(parts)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from dopr_robot import sb3_experts
    from dopr_robot.config import resolve_config

    cfg = resolve_config(sb3_experts.ExpertTrainConfig, args, exclude=TRAIN_OWN_FIELDS)
    cfg = replace(cfg, overrides=dict(sb3_experts.parse_override(text) for text in args.hp), command=_train_command(args))
    if args.export_to:  # checked now, not after the training
        sb3_experts.check_export_destination(args.export_to, overwrite=args.overwrite)
    run_info = sb3_experts.train_expert(cfg)
    print(f"trained {run_info['steps_done']} steps of {cfg.algo} on {cfg.task}; run folder {cfg.out}")
    if args.export_to:
        which = "best" if (cfg.run_dir / "best" / "model.zip").is_file() else "latest"
        to = Path(args.export_to)
        _print_manifest(sb3_experts.export_run(cfg.run_dir, to, which=which, command=cfg.command, overwrite=args.overwrite), to)
    return 0


def _export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import envs.experts.sb3 as weights
    from dopr_robot import sb3_experts
    from dopr_robot.errors import UserError

    run_file = Path(args.run) / "run.json"
    if not run_file.is_file():
        raise UserError(f"{args.run} is not a training run folder (no run.json)")
    if args.episodes < 1:
        raise UserError(f"episodes must be >= 1, got {args.episodes}")
    if args.to is None:
        to = weights.weights_dir(json.loads(run_file.read_text())["task"])
        if weights.is_expert_folder(to):  # the shipped expert is replaced only when asked by name
            raise UserError(f"{to} holds the shipped expert; export elsewhere with --to DIR, or replace it with "
                            f"--to {to} --overwrite")
    else:
        to = Path(args.to)
    parts = ["dopr-robot", "expert", "export", "--run", args.run, "--to", str(to), "--which", args.which, "--episodes", str(args.episodes)]
    command = shlex.join(parts + (["--note", args.note] if args.note else []))
    manifest = sb3_experts.export_run(Path(args.run), to, which=args.which, episodes=args.episodes, command=command,
                                      note=args.note, overwrite=args.overwrite)
    _print_manifest(manifest, to)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dopr_robot import sb3_experts
    from envs import seeds

    seed = seeds.EXPERT_MANIFEST.start if args.seed is None else args.seed
    result = sb3_experts.evaluate_expert(args.task, Path(args.expert) if args.expert else None, args.episodes, seed)
    print(
        f"{result['task']}: return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {result['episodes']} episodes "
        f"(seeds {result['seeds']}), mean length {result['length_mean']:.0f}, {result['ended_early']} ended before the "
        f"horizon, success rate {result['success_rate']:.2f}"
    )
    return 0


ACTIONS = {"train": _train, "export": _export, "eval": _eval}


def run(args: argparse.Namespace) -> int:
    from dopr_robot.errors import UserError

    if args.expert_command not in ACTIONS:
        raise UserError("missing action: dopr-robot expert {train,export,eval} ... (see --help)")
    return ACTIONS[args.expert_command](args)


def _print_manifest(manifest: dict, folder) -> None:
    ev = manifest["evaluation"]
    print(
        f"exported {manifest['task']} ({manifest['algo']}, {manifest['steps_trained']} steps) to {folder}: return "
        f"{ev['return_mean']:.1f} ± {ev['return_std']:.1f} over {ev['episodes']} episodes, success rate {ev['success_rate']:.2f}"
    )
