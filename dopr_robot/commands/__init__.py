"""One module per ``dopr-robot`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``."""
