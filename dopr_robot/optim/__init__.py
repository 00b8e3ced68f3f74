"""Optimizers: DoPr, its base gradient preconditioners, and the registry.

This package imports nothing else from the project, so it can be dropped into any PyTorch loop::

    from dopr_robot.optim import DoPr
    optimizer = DoPr(model, base="adamw", lr=1e-3, damping=0.01)
"""

from dopr_robot.optim.adamuon import AdaMuon, AdaMuonWithAdamW
from dopr_robot.optim.adapters import ADAPTERS, CONV_FORMS
from dopr_robot.optim.dopr import BASE_OPTIMIZERS, DoPr
from dopr_robot.optim.muon import MuonWithAdamW
from dopr_robot.optim.registry import (
    DOPR_ONLY_ARGUMENTS, OPTIMIZERS, base_of, describe_registry, dopr_only_arguments, is_dopr, make_optimizer,
    optimizer_arguments,
)
from dopr_robot.optim.signum import Signum

__all__ = [
    "ADAPTERS", "AdaMuon", "AdaMuonWithAdamW", "BASE_OPTIMIZERS", "CONV_FORMS", "DOPR_ONLY_ARGUMENTS", "DoPr", "MuonWithAdamW", "OPTIMIZERS",
    "Signum", "base_of", "describe_registry", "dopr_only_arguments", "is_dopr", "make_optimizer",
    "optimizer_arguments",
]
