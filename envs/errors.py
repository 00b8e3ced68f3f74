"""The one error type a user can cause and fix.

Every layer (envs, demos, policies, training, evaluation) raises :class:`UserError` for problems in
what the user gave it: a bad path, an unknown name, a corrupt file, data that does not fit. The CLI
prints its message (no traceback) and exits with status 2. It lives here, in the lowest layer, and
this module imports nothing, so every layer can raise it without importing upward;
``dopr_robot.errors`` re-exports the same class for the layers above.
"""


class UserError(Exception):
    """A problem in the user's input; the message names the problem and the fix."""
