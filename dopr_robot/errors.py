"""The one error type a user can cause and fix, re-exported for the layers above ``envs``.

The class is defined in :mod:`envs.errors` (the lowest layer, so that envs/ and demos/ can raise it
without importing upward); this is the same class, so ``except UserError`` in the CLI catches what
every layer raises. The CLI prints its message (no traceback) and exits with status 2.
"""

from envs.errors import UserError

__all__ = ["UserError"]
