"""An optimizer's step that stays inside a compiled graph."""

from __future__ import annotations

import inspect

import torch
from torch.optim import Optimizer


def step_in_graph(optimizer: Optimizer) -> None:
    """``optimizer.step()``; while ``torch.compile`` traces, the step its class defines, without torch.optim's
    step decorator, under ``no_grad``.

    The decorator sets the grad mode, which breaks the traced graph around the step, so callers inside a
    compiled update (DoPr's base step, Muon's two parts, train's compiled step) keep the whole update in one
    graph this way. The traced path bypasses the step hooks and any wrapper set on the instance (an LR
    scheduler's), so it is for optimizers nothing registers hooks on.
    """
    if not torch.compiler.is_compiling():
        optimizer.step()
        return
    with torch.no_grad():
        inspect.unwrap(type(optimizer).step)(optimizer)
