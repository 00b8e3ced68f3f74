"""One module per ``dopr-robot`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

Each is listed, with its help line, in ``dopr_robot.cli.COMMANDS``, which imports only the one a
command line names. Commands never import each other: what two of them share lives below them
(``tests/test_layering.py`` holds both rules).
"""
