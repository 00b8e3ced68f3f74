"""dopr-robot expert: train, export and evaluate the SB3 locomotion experts (``dopr_robot.sb3_experts``)."""

from __future__ import annotations

import argparse
import shlex

from dopr_robot.sb3_experts import EVAL_EPISODES

HELP = "train (resumably), export and evaluate the stable-baselines3 locomotion experts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="expert_command", metavar="ACTION")

    train = sub.add_parser("train", help="train an expert, checkpointing so that --resume can continue it")
    train.add_argument("--task", required=True, help="locomotion task, e.g. Hopper-v5")
    train.add_argument("--algo", required=True, help="sac, td3, ppo or tqc (tqc needs sb3-contrib; hyperparameters: envs/experts/hyperparams.json)")
    train.add_argument("--steps", type=int, required=True, help="total env steps to reach (a resumed run continues up to it)")
    train.add_argument("--out", required=True, help="run folder: checkpoints, logs, run.json")
    train.add_argument("--seed", type=int, default=0, help="seed of the env and the algorithm")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--checkpoint-every", type=int, default=20_000, help="env steps between checkpoints")
    train.add_argument("--eval-every", type=int, default=20_000, help="env steps between deterministic evaluations (0: none)")
    train.add_argument("--eval-episodes", type=int, default=EVAL_EPISODES,
                       help=f"episodes per periodic evaluation, which chooses best/ (default: {EVAL_EPISODES})")
    train.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter (JSON value), repeatable")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    train.add_argument("--export-to", default=None, help="when training ends, export the best model here (actor + manifest)")

    export = sub.add_parser("export", help="export a run's model as a torch actor + manifest.json (no SB3 needed to use it)")
    export.add_argument("--run", required=True, help="run folder written by `expert train`")
    export.add_argument("--to", default=None, help="destination folder (default: envs/experts/weights/<task>/)")
    export.add_argument("--which", default="best", help="best (best periodic evaluation) or latest (newest checkpoint)")
    export.add_argument("--episodes", type=int, default=20, help="seeded episodes for the manifest's evaluation")
    export.add_argument("--note", default="", help="free text stored in manifest.json (e.g. why training stopped)")

    evaluate = sub.add_parser("eval", help="mean ± std return and success rate of an expert over seeded episodes")
    evaluate.add_argument("--task", required=True, help="locomotion task, e.g. Hopper-v5")
    evaluate.add_argument("--expert", default=None, help="exported expert folder or SB3 .zip of a run (default: the shipped expert)")
    evaluate.add_argument("--episodes", type=int, default=20, help="number of episodes")
    evaluate.add_argument("--seed", type=int, default=None,
                          help="first episode seed (seeds seed..seed+episodes-1; default: the start of the expert-manifest "
                               "range envs.seeds.EXPERT_MANIFEST, 10000, the seeds of manifest.json's evaluation)")


def _command(args: argparse.Namespace) -> str:
    parts = ["dopr-robot", "expert", "train", "--task", args.task, "--algo", args.algo, "--steps", str(args.steps), "--out", args.out, "--seed", str(args.seed)]
    if args.resume:
        parts.append("--resume")
    if args.checkpoint_every != 20_000:
        parts += ["--checkpoint-every", str(args.checkpoint_every)]
    if args.eval_every != 20_000:
        parts += ["--eval-every", str(args.eval_every)]
    if args.eval_episodes != EVAL_EPISODES:
        parts += ["--eval-episodes", str(args.eval_episodes)]
    for override in args.hp:
        parts += ["--hp", override]
    if args.threads != 1:
        parts += ["--threads", str(args.threads)]
    if args.export_to:
        parts += ["--export-to", args.export_to]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dopr_robot import sb3_experts
    from dopr_robot.errors import UserError

    if args.expert_command == "train":
        cfg = sb3_experts.ExpertTrainConfig(
            task=args.task,
            algo=args.algo.lower(),
            steps=args.steps,
            out=Path(args.out),
            seed=args.seed,
            resume=args.resume,
            checkpoint_every=args.checkpoint_every,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            overrides=dict(sb3_experts.parse_override(text) for text in args.hp),
            threads=args.threads,
            command=_command(args),
        )
        run_info = sb3_experts.train_expert(cfg)
        print(f"trained {run_info['steps_done']} steps of {cfg.algo} on {cfg.task}; run folder {cfg.out}")
        if args.export_to:
            which = "best" if (cfg.out / "best" / "model.zip").is_file() else "latest"
            _print_manifest(sb3_experts.export_run(cfg.out, Path(args.export_to), which=which, command=cfg.command), Path(args.export_to))
        return 0
    if args.expert_command == "export":
        import json

        run_file = Path(args.run) / "run.json"
        if not run_file.is_file():
            raise UserError(f"{args.run} is not a training run folder (no run.json)")
        if args.episodes < 1:
            raise UserError(f"episodes must be >= 1, got {args.episodes}")
        import envs.experts.sb3 as weights

        to = Path(args.to) if args.to else weights.weights_dir(json.loads(run_file.read_text())["task"])
        parts = ["dopr-robot", "expert", "export", "--run", args.run, "--to", str(to), "--which", args.which, "--episodes", str(args.episodes)]
        command = shlex.join(parts + (["--note", args.note] if args.note else []))
        manifest = sb3_experts.export_run(Path(args.run), to, which=args.which, episodes=args.episodes, command=command, note=args.note)
        _print_manifest(manifest, to)
        return 0
    if args.expert_command == "eval":
        from envs import seeds

        seed = seeds.EXPERT_MANIFEST.start if args.seed is None else args.seed
        result = sb3_experts.evaluate_expert(args.task, Path(args.expert) if args.expert else None, args.episodes, seed)
        print(
            f"{result['task']}: return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {result['episodes']} episodes "
            f"(seeds {result['seeds']}), mean length {result['length_mean']:.0f}, success rate {result['success_rate']:.2f}"
        )
        return 0
    raise UserError("missing action: dopr-robot expert {train,export,eval} ... (see --help)")


def _print_manifest(manifest: dict, folder) -> None:
    ev = manifest["evaluation"]
    print(
        f"exported {manifest['task']} ({manifest['algo']}, {manifest['steps_trained']} steps) to {folder}: return "
        f"{ev['return_mean']:.1f} ± {ev['return_std']:.1f} over {ev['episodes']} episodes, success rate {ev['success_rate']:.2f}"
    )
