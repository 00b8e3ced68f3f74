"""The optimizer registry: every name a config or the CLI may use, and how it is built."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from torch import nn
from torch.optim import Optimizer

from dopr_robot.optim.dopr import BASE_OPTIMIZERS, DoPr

# name -> (builder(model, **kwargs), one-line description). Baselines are the unmodified base
# optimizers; "dopr-X" puts activation preconditioning in front of X.
OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], str]] = {
    "sgd": (BASE_OPTIMIZERS["sgd"], "torch.optim.SGD"),
    "adam": (BASE_OPTIMIZERS["adam"], "torch.optim.Adam"),
    "adamw": (BASE_OPTIMIZERS["adamw"], "torch.optim.AdamW"),
    "signum": (BASE_OPTIMIZERS["signum"], "sign of momentum (Signum), decoupled weight decay"),
    "muon": (BASE_OPTIMIZERS["muon"], "torch.optim.Muon on linear weights, AdamW on the rest"),
    "adamuon": (BASE_OPTIMIZERS["adamuon"], "AdaMuon (Si et al. 2025) on linear weights, AdamW on the rest"),
    "dopr-sgd": (lambda model, **kw: DoPr(model, base="sgd", **kw), "AP alone (unstable ablation)"),
    "dopr-adam": (lambda model, **kw: DoPr(model, base="adam", **kw), "AP, then Adam"),
    "dopr-adamw": (lambda model, **kw: DoPr(model, base="adamw", **kw), "AP, then AdamW"),
    "dopr-signum": (lambda model, **kw: DoPr(model, base="signum", **kw), "AP, then Signum"),
    "dopr-muon": (lambda model, **kw: DoPr(model, base="muon", **kw), "AP, then Muon (AdamW off linear weights)"),
    "dopr-adamuon": (lambda model, **kw: DoPr(model, base="adamuon", **kw),
                     "AP, then AdaMuon (AdamW off linear weights)"),
}

# Arguments only DoPr takes; a baseline given one of them is a configuration mistake.
DOPR_ONLY_ARGUMENTS = tuple(
    name for name in inspect.signature(DoPr.__init__).parameters
    if name not in ("self", "model", "base", "lr", "weight_decay", "base_kwargs")
)


DOPR_PREFIX = "dopr-"


def is_dopr(name: str) -> bool:
    """Whether the registry name puts AP in front of its base."""
    return name.startswith(DOPR_PREFIX)


def base_of(name: str) -> str:
    """The base optimizer a registry name runs: ``"dopr-adamw"`` -> ``"adamw"``, ``"adamw"`` -> ``"adamw"``."""
    return name[len(DOPR_PREFIX):] if is_dopr(name) else name


def dopr_only_arguments(options: Mapping[str, Any]) -> list[str]:
    """The names in ``options`` that only DoPr takes, sorted (what a plain optimizer would reject)."""
    return sorted(set(options) & set(DOPR_ONLY_ARGUMENTS))


def optimizer_arguments(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as optimizer ``name`` takes them: DoPr's own arguments are dropped for a plain
    optimizer, so that one set of options serves every cell of a DoPr-X vs X comparison."""
    if is_dopr(name):
        return dict(options)
    return {key: value for key, value in options.items() if key not in DOPR_ONLY_ARGUMENTS}


def make_optimizer(name: str, model: nn.Module, **kwargs) -> Optimizer:
    """Build the optimizer registered as ``name`` over ``model``'s trainable parameters.

    ``kwargs`` go to the optimizer (``lr``, ``weight_decay``, base arguments such as ``betas``,
    and for ``dopr-*`` names ``damping``, ``cov_ema``, ``refresh_every``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    if not is_dopr(name):
        misplaced = dopr_only_arguments(kwargs)
        if misplaced:
            raise ValueError(
                f"Optimizer {name!r} does not take {', '.join(misplaced)}: "
                f"{'it is a DoPr option' if len(misplaced) == 1 else 'they are DoPr options'} (use '{DOPR_PREFIX}{name}')"
            )
    builder, _ = OPTIMIZERS[name]
    try:
        return builder(model, **kwargs)
    except TypeError as err:  # an argument the base optimizer does not know
        raise ValueError(f"Optimizer {name!r}: {err}") from err


def describe_registry() -> str:
    """The registry as a text table (for ``dopr-robot optimizers``)."""
    width = max(len(name) for name in OPTIMIZERS)
    return "\n".join(f"{name.ljust(width)}  {description}" for name, (_, description) in OPTIMIZERS.items())
