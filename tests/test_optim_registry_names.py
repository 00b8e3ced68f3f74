"""Registry names: the base a name runs, and which options a name takes."""

import pytest
import torch
from torch import nn

from dopr_robot.optim import OPTIMIZERS, base_of, dopr_only_arguments, is_dopr, make_optimizer, optimizer_arguments


@pytest.mark.parametrize("name, base", [
    ("dopr-adamw", "adamw"), ("adamw", "adamw"), ("dopr-sgd", "sgd"), ("muon", "muon"), ("dopr-adamuon", "adamuon"),
])
def test_base_of_strips_the_dopr_prefix_only(name, base):
    assert base_of(name) == base


def test_every_dopr_name_has_its_base_in_the_registry():
    for name in OPTIMIZERS:
        assert base_of(name) in OPTIMIZERS
        assert not is_dopr(base_of(name))


def test_optimizer_arguments_drops_dopr_options_for_plain_optimizers_only():
    options = {"damping": 0.1, "refresh_every": 5, "cov_ema": 0.9, "betas": (0.9, 0.99)}
    assert optimizer_arguments("adamw", options) == {"betas": (0.9, 0.99)}
    assert optimizer_arguments("dopr-adamw", options) == options
    assert optimizer_arguments("dopr-adamw", options) is not options  # a copy: callers may add to it


def test_dopr_only_arguments_names_the_misplaced_options_sorted():
    assert dopr_only_arguments({"refresh_every": 5, "lr": 1e-3, "damping": 0.1}) == ["damping", "refresh_every"]
    assert dopr_only_arguments({"lr": 1e-3, "betas": (0.9, 0.99)}) == []


def test_filtered_options_build_every_optimizer_in_a_pair():
    """The filter leaves exactly what both halves of a DoPr-X vs X pair accept."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    options = {"damping": 0.05, "refresh_every": 2}
    for name in ("adamw", "dopr-adamw"):
        optimizer = make_optimizer(name, model, lr=1e-3, **optimizer_arguments(name, options))
        assert isinstance(optimizer, torch.optim.Optimizer)
    with pytest.raises(ValueError, match="damping, refresh_every: they are DoPr options"):
        make_optimizer("adamw", model, lr=1e-3, **options)
