"""DoPr against an independent float64 computation of the method, and its guarantees."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from dopr_robot.optim import DoPr, Signum, make_optimizer
from dopr_robot.optimizer_demo import DEMO_MODELS


def reference_ap_gradient(inputs: np.ndarray, grad_w: np.ndarray, grad_b: np.ndarray, damping: float) -> np.ndarray:
    """G̃ (Σ̃ + λI)⁻¹ in float64 from the definitions, with numpy only."""
    z = np.concatenate([inputs, np.ones((inputs.shape[0], 1))], axis=1).astype(np.float64)
    sigma = z.T @ z / z.shape[0]
    lam = damping * np.trace(sigma) / sigma.shape[0]
    g = np.concatenate([grad_w, grad_b[:, None]], axis=1).astype(np.float64)
    # X (Σ + λI) = G  <=>  (Σ + λI) Xᵀ = Gᵀ  (symmetric)
    return np.linalg.solve(sigma + lam * np.eye(sigma.shape[0]), g.T).T


def one_backward(layer: nn.Linear, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    loss = (layer(inputs) - targets).pow(2).mean()
    loss.backward()


@pytest.mark.parametrize("damping", [1e-3, 0.1, 1.0])
def test_sgd_step_is_exactly_minus_lr_times_ap_gradient(damping: float) -> None:
    torch.manual_seed(0)
    d_in, d_out, n, lr = 7, 3, 50, 0.1
    layer = nn.Linear(d_in, d_out)
    inputs = torch.randn(n, d_in) * torch.tensor([3.0, 0.1, 1, 1, 5, 1, 0.5]) + 2.0
    targets = torch.randn(n, d_out)
    optimizer = DoPr(layer, base="sgd", lr=lr, damping=damping, momentum=0.0, weight_decay=0.0)
    before = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().clone()
    one_backward(layer, inputs, targets)
    expected = reference_ap_gradient(
        inputs.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(), damping
    )
    optimizer.step()
    after = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach()
    np.testing.assert_allclose((after - before).numpy(), -lr * expected, rtol=1e-4, atol=1e-6)
    assert optimizer.numerics() == {"layer_steps": 1, "damping_retries": 0, "skipped": 0}


def test_step_leaves_raw_gradients_in_place() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 2)
    optimizer = DoPr(layer, base="adamw", lr=1e-2)
    one_backward(layer, torch.randn(16, 4), torch.randn(16, 2))
    raw = layer.weight.grad.clone()
    optimizer.step()
    assert torch.equal(layer.weight.grad, raw)


def test_adamw_base_follows_torch_adamw_fed_the_ap_gradient() -> None:
    torch.manual_seed(1)
    d_in, d_out, damping = 6, 4, 0.05
    layer = nn.Linear(d_in, d_out)
    twin = copy.deepcopy(layer)
    settings = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.1)
    optimizer = DoPr(layer, base="adamw", damping=damping, **settings)
    reference = torch.optim.AdamW(twin.parameters(), **settings)
    generator = torch.Generator().manual_seed(2)
    for _ in range(8):
        inputs = torch.randn(32, d_in, generator=generator) * 4.0 + 1.0
        targets = torch.randn(32, d_out, generator=generator)
        optimizer.zero_grad()
        one_backward(layer, inputs, targets)
        optimizer.step()
        reference.zero_grad()
        one_backward(twin, inputs, targets)
        ap = reference_ap_gradient(inputs.numpy(), twin.weight.grad.numpy(), twin.bias.grad.numpy(), damping)
        twin.weight.grad = torch.from_numpy(ap[:, :d_in]).float()
        twin.bias.grad = torch.from_numpy(ap[:, d_in]).float()
        reference.step()
    torch.testing.assert_close(layer.weight, twin.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.bias, twin.bias, rtol=1e-4, atol=1e-5)


def regression_loss_after(name: str, steps: int = 60, **kwargs) -> tuple[float, float]:
    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]()
    inputs, targets = torch.randn(128, 17), torch.randn(128, 6)
    optimizer = make_optimizer(name, model, **kwargs)
    losses = []
    for _ in range(steps):
        loss = (model(inputs) - targets).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
    return losses[0], losses[-1]


# The loss after 60 steps on the demo MLP, as a fraction of the first, that DoPr-X must reach: below what
# X alone reaches (muon 0.186, signum 0.034, adam 0.022, sgd 0.46; DoPr-X reaches 0.166, 0.030, 0.012,
# 0.26), so DoPr-X with its AP step turned off (X itself) fails. Any other name: 0.7.
DOPR_LOSS_RATIO = {"dopr-muon": 0.176, "dopr-signum": 0.032, "dopr-adam": 0.016, "dopr-sgd": 0.35}


def check_decrease(name: str) -> None:
    first, last = regression_loss_after(name, lr=1e-2 if "sgd" not in name else 0.05)
    assert np.isfinite(last)
    assert last < DOPR_LOSS_RATIO.get(name, 0.7) * first


@pytest.mark.parametrize("name", ["muon", "dopr-muon", "signum", "dopr-signum", "adam", "dopr-adam", "dopr-sgd"])
def test_every_base_decreases_a_loss(name: str) -> None:
    check_decrease(name)


def raw_gradients(weight_grads, bias_grads, state, **options):
    """The AP step turned off: every layer's (weight, bias) gradient as it came."""
    return [None if grad is None else (grad, bias) for grad, bias in zip(weight_grads, bias_grads)]


def test_the_loss_checks_fail_with_the_ap_step_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import dopr_robot.optim.dopr as dopr_module

    monkeypatch.setattr(dopr_module, "activation_precondition", raw_gradients)
    for name in DOPR_LOSS_RATIO:
        with pytest.raises(AssertionError):
            check_decrease(name)


def test_muon_base_orthogonalizes_weights_and_sends_the_rest_to_adamw() -> None:
    model = DEMO_MODELS["attention"]()
    optimizer = make_optimizer("dopr-muon", model)
    muon_params = {id(p) for p in optimizer.base.muon.param_groups[0]["params"]}
    adamw_params = {id(p) for p in optimizer.base.adamw.param_groups[0]["params"]}
    for name, param in model.named_parameters():
        is_linear_weight = name.endswith("weight") and param.ndim == 2
        assert (id(param) in muon_params) == is_linear_weight, name
        assert (id(param) in adamw_params) != is_linear_weight, name


def test_coverage_of_mlp_and_attention_models() -> None:
    mlp = DEMO_MODELS["mlp"]()
    rows = {r["parameter"]: r["preconditioning"] for r in DoPr(mlp, base="adamw").coverage()}
    assert rows == {
        "0.weight": "AP + adamw", "0.bias": "AP + adamw",
        "2.weight": "adamw (raw gradient)", "2.bias": "adamw (raw gradient)",
        "3.weight": "AP + adamw", "3.bias": "AP + adamw",
    }
    attention = DEMO_MODELS["attention"]()
    optimizer = DoPr(attention, base="signum")
    rows = {r["parameter"]: r["preconditioning"] for r in optimizer.coverage()}
    for name in ["1.qkv.weight", "1.qkv.bias", "1.out.weight", "1.mlp.0.weight", "1.mlp.2.bias", "2.weight"]:
        assert rows[name] == "AP + signum", name
    for name in ["1.position", "1.norm1.weight", "1.norm2.bias"]:
        assert rows[name] == "signum (raw gradient)", name
    assert "12 of 17 parameter tensors get AP (6 linear layers hooked)" in optimizer.format_coverage()


def test_attention_tokens_are_folded_into_the_batch() -> None:
    torch.manual_seed(0)
    model = DEMO_MODELS["attention"]()
    optimizer = DoPr(model, base="adamw")
    model(torch.randn(3, 8, 17)).sum().backward()
    qkv = next(layer for layer in optimizer._layers if layer.name == "1.qkv")
    assert float(qkv.sums.count[qkv.index]) == 3 * 8 and float(qkv.sums.outer[qkv.index, -1, -1]) == 3 * 8


def test_tied_weight_gets_base_only() -> None:
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    rows = {r["parameter"]: r["preconditioning"] for r in DoPr(nn.Sequential(first, second)).coverage()}
    assert rows["0.weight"] == "adamw (raw gradient)"


def test_eval_and_no_grad_forwards_leave_statistics_alone() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(5, 2)
    optimizer = DoPr(layer, base="sgd", lr=0.1, damping=0.01)
    twin = copy.deepcopy(layer)
    twin_optimizer = DoPr(twin, base="sgd", lr=0.1, damping=0.01)
    inputs, targets = torch.randn(20, 5), torch.randn(20, 2)

    with torch.no_grad():
        layer(torch.randn(7, 5) * 100)
    with torch.inference_mode():
        layer(torch.randn(7, 5) * 100)
    layer.eval()
    layer(torch.randn(7, 5) * 100)
    layer.train()
    for model, opt in [(layer, optimizer), (twin, twin_optimizer)]:
        one_backward(model, inputs, targets)
        opt.step()
    assert torch.equal(layer.weight, twin.weight)


def test_gradient_accumulation_equals_one_large_batch() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6, 3)
    twin = copy.deepcopy(layer)
    optimizer = DoPr(layer, base="sgd", lr=0.1, damping=0.01)
    twin_optimizer = DoPr(twin, base="sgd", lr=0.1, damping=0.01)
    inputs, targets = torch.randn(40, 6) * 3 + 1, torch.randn(40, 3)
    for half in (slice(0, 20), slice(20, 40)):
        (0.5 * (layer(inputs[half]) - targets[half]).pow(2).mean()).backward()
    optimizer.step()
    one_backward(twin, inputs, targets)
    twin_optimizer.step()
    torch.testing.assert_close(layer.weight, twin.weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["dead_units", "constant_inputs", "large_scale", "zero_damping_rank_deficient"])
def test_degenerate_statistics_never_give_nan(case: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    damping = 0.0 if case == "zero_damping_rank_deficient" else 1e-3
    optimizer = DoPr(model, base="sgd", lr=1e-3, damping=damping)
    if case == "dead_units":
        with torch.no_grad():
            model[0].bias.fill_(-1e3)  # every hidden unit dead: the second layer sees zeros only
        inputs = torch.randn(32, 8)
    elif case == "constant_inputs":
        inputs = torch.ones(32, 8) * 3.0
    elif case == "large_scale":
        inputs = torch.randn(32, 8) * 1e4 + 1e5
    else:
        inputs = torch.randn(3, 8)  # 3 rows, 9 dimensions: Σ̃ is singular
    for _ in range(3):
        optimizer.zero_grad()
        (model(inputs) - 1.0).pow(2).mean().backward()
        optimizer.step()
        for param in model.parameters():
            assert torch.isfinite(param).all(), case
    if case == "zero_damping_rank_deficient":  # the 1e-6 relative floor on λ keeps the factorization alive
        assert optimizer.numerics()["skipped"] == 0


def test_failed_factorization_falls_back_to_jacobi_on_the_device() -> None:
    from dopr_robot.optim.activation import damped_factor

    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1: Cholesky breaks down
    factor, usable, failed = damped_factor(indefinite.clone(), relative_damping=0.01, damping_scale=torch.tensor(1.0))
    assert bool(usable) and bool(failed)
    lam = 0.01 * 2.0 / 2
    torch.testing.assert_close(factor, torch.diag(torch.full((2,), (1.0 + lam) ** 0.5)))  # diag(Σ + λI)^½
    factor, usable, failed = damped_factor(indefinite.clone(), relative_damping=0.01, damping_scale=torch.tensor(1000.0))
    assert bool(usable) and not bool(failed)  # λ = 10 > 1: positive definite
    torch.testing.assert_close(factor @ factor.T, indefinite + 10.0 * torch.eye(2))
    off_diagonal_nan = torch.eye(3)
    off_diagonal_nan[2, 0] = off_diagonal_nan[0, 2] = float("nan")  # the trace is fine, the factor is not
    factor, usable, failed = damped_factor(off_diagonal_nan, relative_damping=0.01, damping_scale=torch.tensor(1.0))
    assert bool(usable) and bool(failed)
    torch.testing.assert_close(factor, torch.eye(3) * (1.0 + 0.01) ** 0.5)  # no NaN left anywhere
    _, usable, failed = damped_factor(torch.full((3, 3), float("nan")), 0.1, torch.tensor(1.0))
    assert not bool(usable) and not bool(failed)  # nothing to precondition with: the raw gradient is kept
    _, usable, _ = damped_factor(torch.zeros(3, 3), 0.1, torch.tensor(1.0))  # no recorded inputs
    assert not bool(usable)


def test_the_factor_in_place_of_sigma_equals_the_factor_in_its_own_storage() -> None:
    # damped_factor factors a contiguous Σ in its own storage (eager), anything else into new storage.
    from dopr_robot.optim.activation import damped_factor

    torch.manual_seed(0)
    inputs = torch.randn(3, 50, 20)
    sigma = inputs.mT @ inputs / 50
    in_place = sigma.clone()
    factor, usable, failed = damped_factor(in_place, relative_damping=0.01, damping_scale=torch.ones(3))
    assert factor.data_ptr() == in_place.data_ptr() and bool(usable.all()) and not bool(failed.any())
    strided = torch.empty(3, 20, 40)[..., ::2]  # a non-contiguous copy of Σ
    strided.copy_(sigma)
    other, _, _ = damped_factor(strided, relative_damping=0.01, damping_scale=torch.ones(3))
    assert other.data_ptr() != strided.data_ptr()
    assert torch.equal(factor, other)
    damped = sigma + 0.01 * sigma.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(20)
    torch.testing.assert_close(factor @ factor.mT, damped)
    assert torch.equal(factor, factor.tril())


@pytest.fixture
def threads(request):
    """Run the test at ``request.param`` intra-op threads, then restore torch's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)  # MKL's kernels differ by thread count
@pytest.mark.parametrize("method", ["auto", "cholesky_inverse", "cholesky_solve", "triangular"])
def test_the_inverse_from_the_factor_is_row_major_and_close_to_float64(method: str, threads: int) -> None:
    """Every way of forming the inverse, on damped statistics whose undamped condition number is > 1e6
    (a stack, as for the layers of one width)."""
    from dopr_robot.optim.activation import inverse_from_factor

    torch.manual_seed(0)
    scales = torch.logspace(0, -4, 40)  # covariance eigenvalues from 1 down to 1e-8
    inputs = torch.randn(3, 200, 40) @ torch.linalg.qr(torch.randn(40, 40))[0] * scales
    sigma = inputs.mT @ inputs / 200
    assert torch.linalg.cond(sigma.double()).min() > 1e6
    sigma = sigma + 1e-3 * sigma.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(40)
    inverse = inverse_from_factor(torch.linalg.cholesky(sigma), method)
    assert inverse.shape == (3, 40, 40) and inverse.is_contiguous()
    expected = torch.linalg.inv(sigma.double())
    assert (inverse.double() - expected).abs().max() / expected.abs().max() < 2e-6  # measured ~2e-7 with each method
    torch.testing.assert_close(inverse, inverse.mT, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_an_unknown_inverse_method_is_named() -> None:
    from dopr_robot.optim.activation import inverse_from_factor

    with pytest.raises(ValueError, match="'potri'.*cholesky_inverse"):
        inverse_from_factor(torch.eye(3), "potri")


def test_failed_factorizations_raise_the_layer_damping_and_are_counted(monkeypatch) -> None:
    from dopr_robot.optim.activation import InputSums

    calls = []
    real = InputSums.second_moment

    def breaking_second_moment(self):
        calls.append(1)
        sigma = real(self)
        if len(calls) <= 2:  # the first two factorizations meet an indefinite matrix
            trace = torch.trace(sigma[0])
            sigma = sigma - 2.0 * trace * torch.eye(sigma.shape[-1])
            sigma.diagonal(dim1=-2, dim2=-1).abs_()
            sigma[0, 0, 1] = sigma[0, 1, 0] = 10.0 * torch.trace(sigma[0])
        return sigma

    monkeypatch.setattr(InputSums, "second_moment", breaking_second_moment)
    layer = nn.Linear(3, 2)
    optimizer = DoPr(layer, base="sgd", lr=0.1, damping=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(8, 3)).pow(2).mean().backward()
        optimizer.step()
        assert torch.isfinite(layer.weight).all()
    assert optimizer.numerics() == {"layer_steps": 3, "damping_retries": 2, "skipped": 0}
    assert float(optimizer.state[layer.weight]["damping_scale"]) == 100.0


def test_layer_without_statistics_falls_back_to_the_raw_gradient() -> None:
    layer = nn.Linear(3, 2)
    optimizer = DoPr(layer, base="sgd", lr=0.1)
    layer.weight.grad = torch.ones_like(layer.weight)  # a gradient with no recorded forward
    layer.bias.grad = torch.ones_like(layer.bias)
    before = layer.weight.detach().clone()
    optimizer.step()
    torch.testing.assert_close(layer.weight, before - 0.1)
    assert optimizer.numerics()["skipped"] == 1


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        inputs = torch.randn(16, 17, generator=generator)
        targets = torch.randn(16, 6, generator=generator)
        optimizer.zero_grad()
        (model(inputs) - targets).pow(2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("base", ["adamw", "muon", "signum", "sgd"])
@pytest.mark.parametrize("amortized", [False, True])
def test_state_dict_resume_is_bit_identical(base: str, amortized: bool, tmp_path) -> None:
    options = dict(cov_ema=0.9, refresh_every=3) if amortized else {}
    extra = {"momentum": 0.9} if base == "sgd" else {}

    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]()
    optimizer = DoPr(model, base=base, lr=1e-2, **options, **extra)
    train_steps(model, optimizer, 4, seed=1)
    path = tmp_path / "state.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    train_steps(model, optimizer, 5, seed=2)

    saved = torch.load(path, weights_only=True)
    resumed_model = DEMO_MODELS["mlp"]()
    resumed_model.load_state_dict(saved["model"])
    resumed = DoPr(resumed_model, base=base, lr=1e-2, **options, **extra)
    resumed.load_state_dict(saved["optimizer"])
    train_steps(resumed_model, resumed, 5, seed=2)

    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    if amortized:
        state = resumed.state[resumed_model[0].weight]
        assert "sigma" in state and "inverse" in state


def test_a_state_dict_without_the_per_layer_scalars_loads_them_at_their_first_values() -> None:
    """A file written before the damping multipliers and counters were saved resumes with λ multipliers
    1 and counters 0, then trains exactly as the optimizer that wrote it (whose multipliers were 1)."""
    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]()
    optimizer = DoPr(model, base="adamw", lr=1e-2)
    train_steps(model, optimizer, 3, seed=1)
    assert optimizer.numerics()["damping_retries"] == 0
    saved = copy.deepcopy(optimizer.state_dict())  # the state dict holds the live tensors
    for layer_state in saved["state"].values():
        for key in ("damping_scale", "damping_retries", "skipped"):
            layer_state.pop(key, None)
    resumed_model = DEMO_MODELS["mlp"]()
    resumed_model.load_state_dict(model.state_dict())
    resumed = DoPr(resumed_model, base="adamw", lr=1e-2)
    resumed.load_state_dict(saved)
    assert resumed.numerics() == {"layer_steps": optimizer.numerics()["layer_steps"], "damping_retries": 0, "skipped": 0}
    train_steps(model, optimizer, 2, seed=2)
    train_steps(resumed_model, resumed, 2, seed=2)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert resumed.state[resumed_model[0].weight]["damping_scale"].item() == 1.0


def test_a_refresh_updates_the_groups_stacked_state_in_place(tmp_path) -> None:
    """Layers of one width keep ``sigma`` and ``inverse`` as rows of one tensor, refreshed in place (no
    per-refresh stacking); after ``load_state_dict`` they are stacked once, at the first refresh."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(17, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 6))
    optimizer = DoPr(model, base="adamw", lr=1e-3, cov_ema=0.9, refresh_every=2)
    train_steps(model, optimizer, 2, seed=1)
    states = [optimizer.state[model[i].weight] for i in (2, 4)]  # the two 16-wide layers
    stacked = {key: states[0][key]._base for key in ("sigma", "inverse")}
    for key, base in stacked.items():
        assert base is not None and base.shape == (2, 17, 17)
        assert all(state[key]._base is base for state in states)
    before = {key: base.clone() for key, base in stacked.items()}
    train_steps(model, optimizer, 2, seed=2)  # one more refresh
    for key, base in stacked.items():
        assert all(state[key]._base is base for state in states) and not torch.equal(base, before[key])

    for key in ("damping_scale", "damping_retries", "skipped", "has_inverse"):  # the per-layer scalars too
        assert states[0][key]._base is not None and states[0][key]._base is states[1][key]._base

    optimizer.remove_hooks()
    saved = optimizer.state_dict()
    before = {key: base.clone() for key, base in stacked.items()}
    resumed = DoPr(model, base="adamw", lr=1e-3, cov_ema=0.9, refresh_every=2)
    resumed.load_state_dict(saved)
    train_steps(model, resumed, 2, seed=3)
    for key in ("sigma", "inverse", "skipped"):
        rows = [resumed.state[model[i].weight][key] for i in (2, 4)]
        assert rows[0]._base is not None and rows[0]._base is rows[1]._base
    for key, base in stacked.items():  # the resumed optimizer refreshed its own copies, not the source's
        assert torch.equal(base, before[key])


def test_refresh_every_reuses_the_cached_inverse() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 2)
    optimizer = DoPr(layer, base="sgd", lr=0.1, damping=0.1, refresh_every=2)
    first_inputs = torch.randn(30, 4) * 2
    one_backward(layer, first_inputs, torch.zeros(30, 2))
    optimizer.step()
    # Step 2 is not a refresh: its (very different) inputs are not even recorded.
    optimizer.zero_grad()
    second_inputs = torch.randn(30, 4) * 50
    before = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().clone()
    one_backward(layer, second_inputs, torch.zeros(30, 2))
    z = torch.cat([first_inputs, torch.ones(30, 1)], dim=1).double()
    sigma = z.T @ z / 30
    inverse = torch.linalg.inv(sigma + 0.1 * torch.trace(sigma) / 5 * torch.eye(5, dtype=torch.float64))
    grad = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], dim=1).double()
    optimizer.step()
    after = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach()
    torch.testing.assert_close((after - before).double(), -0.1 * grad @ inverse, rtol=1e-4, atol=1e-6)


def test_scheduler_learning_rate_reaches_the_base() -> None:
    layer = nn.Linear(3, 1)
    optimizer = DoPr(layer, base="muon", lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    for _ in range(3):
        layer(torch.randn(4, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    assert optimizer.base.muon.param_groups[0]["lr"] == pytest.approx(0.25)
    assert optimizer.base.adamw.param_groups[0]["lr"] == pytest.approx(0.25)


def test_signum_moves_every_coordinate_by_lr() -> None:
    param = nn.Parameter(torch.zeros(4))
    optimizer = Signum([param], lr=0.1, momentum=0.0)
    param.grad = torch.tensor([3.0, -0.001, 2e5, -7.0])
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([-0.1, 0.1, -0.1, 0.1]))


def test_remove_hooks_stops_recording() -> None:
    layer = nn.Linear(3, 1)
    optimizer = DoPr(layer)
    optimizer.remove_hooks()
    layer(torch.randn(4, 3)).sum().backward()
    assert float(optimizer._layers[0].sums.count.sum()) == 0


def _two_layer_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _reference_base(name: str, model: nn.Module, settings: dict) -> torch.optim.Optimizer:
    """The unmodified base optimizer over ``model``, built without DoPr's registry."""
    from dopr_robot.optim import AdaMuonWithAdamW, MuonWithAdamW

    if name == "adamuon":
        return AdaMuonWithAdamW(model, **settings)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), **settings)
    if name == "signum":
        return Signum(model.parameters(), **settings)
    return MuonWithAdamW(model, **settings)


@pytest.mark.parametrize("base, settings", [
    ("adamw", dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.1)),
    ("muon", dict(lr=2e-2, weight_decay=0.05, momentum=0.9)),
    ("signum", dict(lr=1e-2, momentum=0.8, weight_decay=0.05)),
    ("adamuon", dict(lr=2e-2, weight_decay=0.05, momentum=0.9)),
])
def test_every_base_follows_itself_fed_the_reference_ap_gradient(base: str, settings: dict) -> None:
    """DoPr-X over several steps = X stepped on G̃(Σ̃+λI)⁻¹ computed in float64 from each layer's inputs."""
    torch.manual_seed(3)
    model = _two_layer_model()
    twin, initial = copy.deepcopy(model), copy.deepcopy(model)
    damping = 0.05
    optimizer = DoPr(model, base=base, damping=damping, **settings)
    reference = _reference_base(base, twin, settings)
    inputs_seen: dict[nn.Linear, torch.Tensor] = {}
    for layer in (twin[0], twin[2]):
        layer.register_forward_hook(lambda module, args, out: inputs_seen.__setitem__(module, args[0].detach()))
    generator = torch.Generator().manual_seed(4)
    for _ in range(6):
        inputs = torch.randn(32, 6, generator=generator) * 3.0 + 0.5
        targets = torch.randn(32, 3, generator=generator)
        optimizer.zero_grad()
        (model(inputs) - targets).pow(2).mean().backward()
        optimizer.step()
        reference.zero_grad()
        (twin(inputs) - targets).pow(2).mean().backward()
        for layer in (twin[0], twin[2]):
            ap = reference_ap_gradient(inputs_seen[layer].numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(),
                                       damping)
            layer.weight.grad = torch.from_numpy(ap[:, :layer.in_features]).float()
            layer.bias.grad = torch.from_numpy(ap[:, layer.in_features]).float()
        reference.step()
    for mine, theirs in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    assert (model[0].weight - initial[0].weight).abs().max() > 0.01  # the steps moved the weights


def test_cov_ema_follows_its_formula() -> None:
    """Σ_k = β Σ_{k-1} + (1-β) Σ̃_k (Σ_1 = Σ̃_1), and the SGD step is -lr G̃ (Σ_k + λ_k I)⁻¹ with λ_k from Σ_k."""
    torch.manual_seed(5)
    beta, damping, lr = 0.7, 0.02, 0.1
    layer = nn.Linear(5, 2)
    optimizer = DoPr(layer, base="sgd", lr=lr, damping=damping, cov_ema=beta, momentum=0.0)
    generator = torch.Generator().manual_seed(6)
    running = None
    for step in range(4):
        inputs = torch.randn(16, 5, generator=generator) * (1.0 + step) + step
        targets = torch.randn(16, 2, generator=generator)
        before = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().double().clone()
        optimizer.zero_grad()
        one_backward(layer, inputs, targets)
        z = np.concatenate([inputs.numpy(), np.ones((16, 1))], axis=1).astype(np.float64)
        batch = z.T @ z / len(z)
        running = batch if running is None else beta * running + (1 - beta) * batch
        g = np.concatenate([layer.weight.grad.numpy(), layer.bias.grad.numpy()[:, None]], axis=1).astype(np.float64)
        lam = damping * np.trace(running) / running.shape[0]
        expected = np.linalg.solve(running + lam * np.eye(6), g.T).T
        optimizer.step()
        np.testing.assert_allclose(optimizer.state[layer.weight]["sigma"].double().numpy(), running, rtol=1e-5, atol=1e-6)
        after = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().double()
        np.testing.assert_allclose((after - before).numpy(), -lr * expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)  # cholesky_inverse at one thread, solves of I at two
@pytest.mark.parametrize("damping", [1e-3, 1e-2])
@pytest.mark.parametrize("d_in", [63, 200])
def test_the_inverse_path_is_as_accurate_as_two_solves_on_ill_conditioned_inputs(
        damping: float, d_in: int, threads: int) -> None:
    """Inputs whose covariance has condition number > 1e6: the damped system is well conditioned (at
    most d/γ), so forming the inverse from the factor (either kernel ``inverse_from_factor`` picks)
    loses no accuracy against two triangular solves; both stay close to float64 (their error is the
    float32 statistics', the same for both)."""
    torch.manual_seed(7)
    d_out, n = 32, 512
    scales = torch.logspace(0, -3, d_in)  # covariance eigenvalues from 1 down to 1e-6
    inputs = torch.randn(n, d_in) @ torch.linalg.qr(torch.randn(d_in, d_in))[0] * scales + 0.5
    targets = torch.randn(n, d_out)
    z = np.concatenate([inputs.numpy(), np.ones((n, 1))], axis=1).astype(np.float64)
    assert np.linalg.cond(z.T @ z / n) > 1e6
    errors = {}
    for apply in ("solve", "inverse"):
        torch.manual_seed(8)
        layer = nn.Linear(d_in, d_out)
        optimizer = DoPr(layer, base="sgd", lr=1.0, damping=damping, apply=apply, momentum=0.0)
        before = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().double().clone()
        one_backward(layer, inputs, targets)
        expected = reference_ap_gradient(inputs.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(), damping)
        optimizer.step()
        got = before - torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().double()
        errors[apply] = np.linalg.norm(got.numpy() - expected) / np.linalg.norm(expected)
    assert errors["inverse"] < 1.1 * errors["solve"] + 1e-6, errors
    # The damped condition number, and so the float32 error, grows with the width (at most d/γ).
    assert max(errors.values()) < (1e-3 if damping < 1e-2 else 2e-4) * (d_in + 1) / 64, errors
