"""dopr-robot tasks: the task registry, with sizes, horizon, expert and availability."""

from __future__ import annotations

import argparse

HELP = "list the tasks: observation/action sizes, horizon, expert kind, availability"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import envs
    from dopr_robot.report.terminal import fit_plain_table

    print(fit_plain_table(envs.describe_tasks()))
    return 0
