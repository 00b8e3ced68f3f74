"""AdaMuon against an independent float64 computation of the paper's Algorithm 1, and as DoPr's base."""

from __future__ import annotations

import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from dopr_robot.optim import AdaMuon, AdaMuonWithAdamW, DoPr, make_optimizer
from dopr_robot.optim.adamuon import newton_schulz
from dopr_robot.optimizer_demo import DEMO_MODELS


def _sibling_test_module(name: str) -> SimpleNamespace:
    """The helpers of another test file, run from its path (the tests folder is not a package)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name(f"{name}.py"))))


dopr_tests = _sibling_test_module("test_optim_dopr")
no_sync_tests = _sibling_test_module("test_optim_no_sync")

NS = (3.4445, -4.7750, 2.0315)  # the quintic Newton–Schulz coefficients (Jordan; torch.optim.Muon; the authors)


# -- the reference: float64 numpy, SVD for the orthogonalization, loops for the second moment ---------

def reference_newton_schulz(s: np.ndarray, steps: int) -> np.ndarray:
    """NS on the singular values: X = S/(‖S‖_F + 1e-7) has singular values σ/(‖S‖_F + 1e-7), and each
    step X ← aX + b(XXᵀ)X + c(XXᵀ)²X maps every singular value σ to aσ + bσ³ + cσ⁵."""
    u, sigma, vt = np.linalg.svd(s.astype(np.float64), full_matrices=False)
    x = sigma / (math.sqrt(float(np.sum(sigma ** 2))) + 1e-7)
    a, b, c = NS
    for _ in range(steps):
        x = a * x + b * x ** 3 + c * x ** 5
    return (u * x) @ vt


def reference_adamuon(w0: np.ndarray, grads: list[np.ndarray], *, lr: float, weight_decay: float, beta: float,
                      nesterov: bool, ns_steps: int = 5, eps: float = 1e-8) -> np.ndarray:
    """Algorithm 1 of arXiv 2507.11005 (v2/v3) with the EMA/Nesterov momentum of torch.optim.Muon."""
    w = w0.astype(np.float64).copy()
    rows, cols = w.shape
    m, v = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        g = g.astype(np.float64)
        m = beta * m + (1 - beta) * g
        u = (1 - beta) * g + beta * m if nesterov else m
        o = reference_newton_schulz(np.sign(u), ns_steps)
        o_hat = np.empty_like(o)
        for i in range(rows):
            for j in range(cols):
                v[i, j] = beta * v[i, j] + (1 - beta) * o[i, j] ** 2
                o_hat[i, j] = o[i, j] / (math.sqrt(v[i, j]) + eps)
        frobenius = math.sqrt(sum(o_hat[i, j] ** 2 for i in range(rows) for j in range(cols)))
        gamma = 0.2 * math.sqrt(rows * cols) / (frobenius + eps)
        w = w - lr * (gamma * o_hat + weight_decay * w)
    return w


@pytest.mark.parametrize("shape", [(6, 3), (3, 6), (5, 5)], ids=["tall", "wide", "square"])
def test_newton_schulz_is_the_singular_value_polynomial(shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    s = torch.sign(torch.randn(shape, generator=generator, dtype=torch.float64))
    s[1] = 0.0  # a dead unit's row: rank deficient
    np.testing.assert_allclose(newton_schulz(s, 5).numpy(), reference_newton_schulz(s.numpy(), 5), atol=1e-12)
    # float32 input is iterated in float32
    assert newton_schulz(s.float(), 5).dtype == torch.float32


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (5, 5)], ids=["tall", "wide", "square"])
def test_update_matches_the_float64_reference(shape, nesterov: bool, dtype, tolerance: float) -> None:
    generator = torch.Generator().manual_seed(1)
    w0 = torch.randn(shape, generator=generator, dtype=dtype)
    # Gradients of varying scale and a dead row at step 2: the sign and the second moment both matter.
    grads = [torch.randn(shape, generator=generator, dtype=dtype) * scale for scale in (1.0, 30.0, 0.01, 3.0, 1.0)]
    grads[1][0] = 0.0
    settings = dict(lr=0.05, weight_decay=0.1, momentum=0.8, nesterov=nesterov)
    param = nn.Parameter(w0.clone())
    optimizer = AdaMuon([param], **settings)
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
    expected = reference_adamuon(w0.numpy(), [g.numpy() for g in grads], lr=0.05, weight_decay=0.1, beta=0.8,
                                 nesterov=nesterov)
    np.testing.assert_allclose(param.detach().double().numpy(), expected, rtol=tolerance, atol=tolerance)


def test_every_step_has_rms_0_2_lr_whatever_the_gradient_scale() -> None:
    param = nn.Parameter(torch.zeros(16, 8))
    optimizer = AdaMuon([param], lr=0.01)
    generator = torch.Generator().manual_seed(2)
    for scale in (1e-6, 1.0, 1e6):
        before = param.detach().clone()
        param.grad = torch.randn(16, 8, generator=generator) * scale
        optimizer.step()
        rms = (param.detach() - before).pow(2).mean().sqrt()
        torch.testing.assert_close(rms, torch.tensor(0.2 * 0.01), rtol=1e-5, atol=0.0)


def test_zero_gradients_and_dead_rows_give_no_nan() -> None:
    param = nn.Parameter(torch.ones(4, 3))
    optimizer = AdaMuon([param], lr=0.1)
    param.grad = torch.zeros(4, 3)
    optimizer.step()
    assert torch.equal(param.detach(), torch.ones(4, 3))  # no gradient, no weight decay: no move
    param.grad = torch.randn(4, 3)
    param.grad[2] = 0.0
    optimizer.step()
    assert torch.isfinite(param).all()
    assert torch.equal(param.detach()[2], torch.ones(3))  # a dead unit's row does not move


# -- as DoPr's base --------------------------------------------------------------------------------

# DoPr-AdaMuon against AdaMuon fed the float64 AP gradient: tests/test_optim_dopr.py, with the other bases.


@pytest.mark.parametrize("name", ["adamuon", "dopr-adamuon"])
def test_decreases_a_loss_on_the_demo_model(name: str) -> None:
    # AP does not speed AdaMuon up on this problem (0.24 of the first loss with it, 0.23 without), so
    # this is no check of the AP step: test_optim_dopr holds DoPr-AdaMuon to the float64 AP gradient.
    first, last = dopr_tests.regression_loss_after(name, lr=1e-2)
    assert np.isfinite(last)
    assert last < 0.7 * first


def test_pairing_sends_linear_weights_to_adamuon_and_the_rest_to_adamw() -> None:
    model = DEMO_MODELS["attention"]()
    optimizer = make_optimizer("adamuon", model)
    assert type(optimizer) is AdaMuonWithAdamW
    adamuon_params = {id(p) for p in optimizer.adamuon.param_groups[0]["params"]}
    adamw_params = {id(p) for p in optimizer.adamw.param_groups[0]["params"]}
    for name, param in model.named_parameters():
        is_linear_weight = name.endswith("weight") and param.ndim == 2
        assert (id(param) in adamuon_params) == is_linear_weight, name
        assert (id(param) in adamw_params) != is_linear_weight, name


def test_coverage_names_adamuon_and_adamw() -> None:
    rows = {r["parameter"]: r["preconditioning"] for r in DoPr(DEMO_MODELS["attention"](), base="adamuon").coverage()}
    for name in ["1.qkv.weight", "1.out.weight", "1.mlp.0.weight", "2.weight"]:
        assert rows[name] == "AP + adamuon", name
    for name in ["1.qkv.bias", "2.bias"]:
        assert rows[name] == "AP + adamw", name
    for name in ["1.position", "1.norm1.weight"]:
        assert rows[name] == "adamw (raw gradient)", name


def test_scheduler_learning_rate_reaches_both_halves() -> None:
    layer = nn.Linear(3, 2)
    optimizer = DoPr(layer, base="adamuon", lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    for _ in range(3):
        layer(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    assert optimizer.base.adamuon.param_groups[0]["lr"] == pytest.approx(0.25)
    assert optimizer.base.adamw.param_groups[0]["lr"] == pytest.approx(0.25)


# -- saving, resuming, no host synchronization ------------------------------------------------------

@pytest.mark.parametrize("name, options", [
    ("adamuon", {}),
    ("dopr-adamuon", {}),
    ("dopr-adamuon", dict(cov_ema=0.9, refresh_every=3)),
], ids=["adamuon", "dopr-exact", "dopr-amortized"])
def test_state_dict_resume_is_bit_identical(name: str, options: dict, tmp_path) -> None:
    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]()
    optimizer = make_optimizer(name, model, lr=1e-2, weight_decay=0.01, **options)
    dopr_tests.train_steps(model, optimizer, 4, seed=1)
    path = tmp_path / "state.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    dopr_tests.train_steps(model, optimizer, 5, seed=2)

    saved = torch.load(path, weights_only=True)
    resumed_model = DEMO_MODELS["mlp"]()
    resumed_model.load_state_dict(saved["model"])
    resumed = make_optimizer(name, resumed_model, lr=1e-2, weight_decay=0.01, **options)
    resumed.load_state_dict(saved["optimizer"])
    dopr_tests.train_steps(resumed_model, resumed, 5, seed=2)

    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    base = resumed.base if name.startswith("dopr-") else resumed
    state = base.adamuon.state[resumed_model[0].weight]
    assert set(state) == {"momentum_buffer", "exp_avg_sq"}


def test_loading_a_foreign_state_dict_is_refused() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="Not a state dict of AdaMuonWithAdamW"):
        AdaMuonWithAdamW(model).load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


@pytest.mark.parametrize("name", ["adamuon", "dopr-adamuon"])
@pytest.mark.parametrize("model_name", ["mlp", "attention"])
def test_step_converts_no_tensor_to_a_python_number(monkeypatch, name: str, model_name: str) -> None:
    torch.manual_seed(0)
    model = DEMO_MODELS[model_name]()
    optimizer = make_optimizer(name, model, lr=1e-3, weight_decay=0.01)
    inputs = torch.randn(16, 17) if model_name == "mlp" else torch.randn(4, 8, 17)

    def backward() -> None:
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()

    backward()
    optimizer.step()  # creates the state, outside the guard
    # torch's AdamW keeps its step counters on the CPU (reading them is no device sync).
    dopr = optimizer if isinstance(optimizer, DoPr) else SimpleNamespace(base=optimizer)
    allowed = no_sync_tests.host_step_counters(dopr)
    for _ in range(3):
        backward()
        with monkeypatch.context() as patch:
            no_sync_tests.forbid_host_conversions(patch, allowed)
            optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_guard_catches_a_conversion_in_adamuon(monkeypatch) -> None:
    """The test above can fail: a host read of γ_t inside the step is caught."""
    param = nn.Parameter(torch.randn(3, 2))
    optimizer = AdaMuon([param])
    param.grad = torch.randn(3, 2)
    no_sync_tests.forbid_host_conversions(monkeypatch, set())
    real_norm = torch.linalg.vector_norm
    monkeypatch.setattr(torch.linalg, "vector_norm", lambda x, *a, **k: float(real_norm(x, *a, **k)))
    with pytest.raises(no_sync_tests.HostConversion):
        optimizer.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["adamuon", "dopr-adamuon"])
def test_cuda_step_makes_no_host_synchronization(name: str) -> None:
    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]().cuda()
    optimizer = make_optimizer(name, model, lr=1e-3)
    inputs = torch.randn(64, 17, device="cuda")
    for step in range(5):
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        if step >= 1:  # the first step creates state (allocations may sync)
            torch.cuda.set_sync_debug_mode("error")
        try:
            optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -- arguments -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=-1.0), r"Invalid learning rate: -1.0"),
    (dict(weight_decay=-0.1), r"Invalid weight_decay: -0.1"),
    (dict(momentum=1.0), r"Invalid momentum: 1.0 \(must be in \[0, 1\)\)"),
    (dict(nesterov="yes"), r"Invalid nesterov: 'yes'"),
    (dict(ns_steps=0), r"Invalid ns_steps: 0"),
    (dict(ns_steps=2.5), r"Invalid ns_steps: 2.5"),
    (dict(eps=0.0), r"Invalid eps: 0.0 \(must be > 0"),
])
def test_adamuon_validates_its_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdaMuon([nn.Parameter(torch.zeros(2, 2))], **kwargs)


def test_adamuon_takes_matrices_only() -> None:
    with pytest.raises(ValueError, match=r"AdaMuon takes 2-D matrices only, got a parameter of shape \(3,\)"):
        AdaMuon(nn.Linear(2, 3).parameters())


def test_pairing_needs_the_model() -> None:
    with pytest.raises(ValueError, match=r"AdaMuonWithAdamW takes the model \(an nn.Module\), got list"):
        AdaMuonWithAdamW(list(nn.Linear(2, 2).parameters()))
