"""An optimizer's step inside a compiled graph."""

from __future__ import annotations

import inspect

from torch.optim import Optimizer


def undecorated_step(optimizer: Optimizer) -> None:
    """Run the step ``optimizer``'s class defines, without torch.optim's step decorator.

    The decorator sets the grad mode, which breaks a ``torch.compile`` graph around the step; a caller
    whose grad mode is off already (a ``no_grad`` step, a compiled update) calls this to keep the step in
    its own graph. It also bypasses the step hooks and any wrapper set on the instance (an LR scheduler's),
    so it is for optimizers nothing registers hooks on.
    """
    inspect.unwrap(type(optimizer).step)(optimizer)
