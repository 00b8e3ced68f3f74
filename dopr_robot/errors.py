"""The one error type a user can cause and fix.

Every layer (envs, demos, policies, training, evaluation) raises :class:`UserError` for problems in
what the user gave it: a bad path, an unknown name, a corrupt file, data that does not fit. The CLI
prints its message (no traceback) and exits with status 2.

This module is part of the project's foundation (with :mod:`dopr_robot.atomic`): it imports nothing,
and ``dopr_robot/__init__.py`` imports nothing, so the lowest layers (``envs``, ``demos``) use it
without pulling in anything above them (``tests/test_layering.py`` holds both to that).
"""


class UserError(Exception):
    """A problem in the user's input; the message names the problem and the fix."""
