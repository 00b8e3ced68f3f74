"""The optimizer registry and the argument checks users hit first."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dopr_robot.cli import main
from dopr_robot.optim import (OPTIMIZERS, AdaMuonWithAdamW, DoPr, MuonWithAdamW, Signum, base_of, describe_registry,
                               is_dopr, make_optimizer)

EXPECTED_NAMES = ["sgd", "adam", "adamw", "signum", "muon", "adamuon",
                  "dopr-sgd", "dopr-adam", "dopr-adamw", "dopr-signum", "dopr-muon", "dopr-adamuon"]


def test_registry_names() -> None:
    assert list(OPTIMIZERS) == EXPECTED_NAMES


def test_optimizers_command_lists_every_name_and_adamuon_coverage(capsys: pytest.CaptureFixture) -> None:
    table = describe_registry().splitlines()
    assert [line.split()[0] for line in table] == EXPECTED_NAMES
    assert main(["optimizers", "--model", "mlp", "--base", "adamuon"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[:len(EXPECTED_NAMES)]]
    assert listed == EXPECTED_NAMES
    assert "AdaMuon (Si et al. 2025) on linear weights, AdamW on the rest" in out
    assert "dopr-adamuon on the demo 'mlp' model:" in out
    coverage = {line.split()[0]: line.split(maxsplit=2)[2] for line in out.split("model:\n")[1].splitlines()[1:-1]}
    assert coverage == {"0.weight": "AP + adamuon", "0.bias": "AP + adamw",
                        "2.weight": "adamw (raw gradient)", "2.bias": "adamw (raw gradient)",  # the LayerNorm
                        "3.weight": "AP + adamuon", "3.bias": "AP + adamw"}


def one_step(name: str, model: nn.Module, lr: float = 1e-3) -> tuple[dict, dict, float, float]:
    """One step of ``name`` on a squared error: (parameter changes, gradients, loss before, loss after)."""
    inputs, targets = torch.randn(16, 3, generator=torch.Generator().manual_seed(1)), torch.ones(16, 1)
    optimizer = make_optimizer(name, model, lr=lr, weight_decay=0.0)
    assert isinstance(optimizer, torch.optim.Optimizer)
    if is_dopr(name):
        assert isinstance(optimizer, DoPr) and optimizer.base_name == base_of(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = (model(inputs) - targets).pow(2).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    with torch.no_grad():
        after = (model(inputs) - targets).pow(2).mean().item()
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}, grads, loss.item(), after


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_registered_optimizer_builds_and_steps(name: str) -> None:
    """Every parameter moves, the loss goes down, and by the kind of update the name promises: SGD
    -lr g, Adam(W)'s and Signum's first step -lr sign(g); DoPr-X moves the linear layers otherwise than
    X from the same state and gradient, and the LayerNorm (raw gradient) exactly as X does."""
    lr = 1e-3
    moved, grads, loss, after = one_step(name, tiny_model(), lr)
    for param, change in moved.items():
        assert torch.isfinite(change).all() and change.abs().min() > 0, f"{param} did not move"
    assert after < loss
    if name == "sgd":
        for param in moved:
            torch.testing.assert_close(moved[param], -lr * grads[param])
    if name in ("adam", "adamw", "signum"):
        for param in moved:
            torch.testing.assert_close(moved[param], -lr * grads[param].sign(), rtol=1e-3, atol=1e-7)
    if is_dopr(name):
        base_moved, _, _, _ = one_step(base_of(name), tiny_model(), lr)
        for param in ("1.weight", "1.bias"):  # the LayerNorm: raw gradient into the same base
            torch.testing.assert_close(moved[param], base_moved[param])
        linear = ("0.weight", "0.bias", "2.weight", "2.bias")  # AP in front of the base (a sign-based
        # base's first step changes only where AP flips a sign)
        assert not all(torch.allclose(moved[param], base_moved[param], rtol=1e-2, atol=1e-6) for param in linear)


def test_baseline_types() -> None:
    model = nn.Linear(2, 2)
    assert type(make_optimizer("adamw", model)) is torch.optim.AdamW
    assert type(make_optimizer("signum", model)) is Signum
    assert type(make_optimizer("muon", model)) is MuonWithAdamW
    assert type(make_optimizer("adamuon", model)) is AdaMuonWithAdamW


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown optimizer 'lion'; valid names: sgd, adam, .*, dopr-adamuon$"):
        make_optimizer("lion", nn.Linear(2, 2))


def test_dopr_option_given_to_a_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'adamw' does not take damping: it is a DoPr option \(use 'dopr-adamw'\)"):
        make_optimizer("adamw", nn.Linear(2, 2), damping=0.1)


def test_unknown_base_argument_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"Optimizer 'dopr-adamw': .*unexpected keyword argument 'momentum'"):
        make_optimizer("dopr-adamw", nn.Linear(2, 2), momentum=0.9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), r"Invalid learning rate: -1.0"),
        (dict(damping=-0.1), r"Invalid damping: -0.1"),
        (dict(weight_decay=-1.0), r"Invalid weight_decay: -1.0"),
        (dict(cov_ema=1.0), r"Invalid cov_ema: 1.0 \(must be in \[0, 1\)"),
        (dict(refresh_every=0), r"Invalid refresh_every: 0"),
        (dict(refresh_every=2.5), r"Invalid refresh_every: 2.5"),
        (dict(base="lion"), r"Unknown base optimizer 'lion'; valid: sgd, adam, adamw, signum, muon, adamuon$"),
    ],
)
def test_dopr_validates_its_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DoPr(nn.Linear(2, 2), **kwargs)


def test_dopr_needs_the_model_not_its_parameters() -> None:
    with pytest.raises(ValueError, match=r"DoPr takes the model \(an nn.Module\)"):
        DoPr(list(nn.Linear(2, 2).parameters()))


def test_signum_validates_momentum() -> None:
    with pytest.raises(ValueError, match=r"Invalid momentum: 1.0"):
        Signum(nn.Linear(2, 2).parameters(), momentum=1.0)


def test_loading_a_foreign_state_dict_is_refused() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="Not a DoPr state dict"):
        DoPr(model).load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())
