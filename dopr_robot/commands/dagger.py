"""dopr-robot dagger: DAgger rounds on a task with a queryable expert (resumable; see :mod:`dopr_robot.dagger`).

Every `train` option is a `dagger` option with the same name (``--lr``, ``--steps`` for round 0),
the initial demonstrations are ``--data`` or collected with ``--demo-*``; ``--rounds``,
``--episodes-per-round``, ``--beta0`` and ``--steps-per-round`` set the rounds.
"""

from __future__ import annotations

import argparse

from dopr_robot.config import add_config_arguments
from dopr_robot.dagger import DaggerConfig
from dopr_robot.grid import add_execution_arguments

HELP = "DAgger: the expert relabels the states the policy visits, aggregated over rounds (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DaggerConfig)
    add_execution_arguments(parser, ("device", "progress"))


def run(args: argparse.Namespace) -> int:
    from dopr_robot.config import resolve_config
    from dopr_robot.dagger import dagger

    config = resolve_config(DaggerConfig, args)
    result = dagger(config, progress=not args.no_progress, device=args.device)
    for record in result.rounds:
        seconds = record["seconds"]
        print(f"round {record['round']}: beta {record['beta']:.3g}, {record['episodes']} episodes in the aggregate, "
              f"{record['expert_labels']} expert labels; rollout {seconds['rollout']:.1f} s, relabel "
              f"{seconds['relabel']:.1f} s, aggregate {seconds['aggregate']:.1f} s, train {seconds['train']:.1f} s")
    print(result)
    return 0
