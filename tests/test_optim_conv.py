"""DoPr on convolutions: both forms against float64 references written from the definitions, the
invariance that defines them, the coverage table's notes, the low-coverage warning, and resuming."""

from __future__ import annotations

import copy
import runpy
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dopr_robot.optim import DoPr
from dopr_robot.optim.activation import InputSums
from dopr_robot.optim.adapters import ADAPTERS, LinearAdapter

# (constructor, input shape without the batch): strides, paddings (zeros, "same", circular),
# dilations, even kernels, output_padding.
CONVS = {
    "conv1d": (lambda bias: nn.Conv1d(3, 4, 3, stride=2, padding=1, bias=bias), (3, 11)),
    "conv1d_dilated_circular": (lambda bias: nn.Conv1d(3, 2, 3, padding="same", dilation=2, padding_mode="circular",
                                                       bias=bias), (3, 9)),
    "conv2d": (lambda bias: nn.Conv2d(3, 4, 3, padding=1, bias=bias), (3, 6, 6)),
    "conv2d_strided": (lambda bias: nn.Conv2d(3, 3, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), bias=bias),
                       (3, 7, 8)),
    "transposed1d": (lambda bias: nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1, bias=bias), (3, 8)),
    "transposed1d_dilated": (lambda bias: nn.ConvTranspose1d(3, 2, 3, stride=3, padding=2, dilation=2,
                                                             output_padding=1, bias=bias), (3, 5)),
}


def correlated_inputs(shape: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    """Channels scaled, mixed and offset: a channel second moment far from the identity (condition ~100)."""
    generator = torch.Generator().manual_seed(seed)
    channels = shape[0]
    per_channel = [-1] + [1] * (len(shape) - 1)
    raw = torch.randn(batch, *shape, generator=generator) * torch.linspace(0.3, 2.0, channels).view(per_channel)
    mix = torch.eye(channels) + 0.7 * torch.ones(channels, channels).triu(1)
    return torch.einsum("ij,bj...->bi...", mix, raw) + torch.linspace(-1.0, 2.0, channels).view(per_channel)


# ---- float64 references, written from the definitions of the layers ----------------------------------------


def padded(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """The input padded as the conv's definition says (both sides; "same" splits d(k-1) left-first)."""
    amounts = []
    for size, dilation, padding in zip(conv.kernel_size, conv.dilation,
                                       conv.padding if not isinstance(conv.padding, str) else [None] * 2):
        if padding is None:  # "same"
            total = dilation * (size - 1)
            padding = (total // 2, total - total // 2)
        else:
            padding = (padding, padding)
        amounts = [*padding, *amounts]  # F.pad lists the last axis first
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, amounts, mode=mode)


def reference_patches(conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows Z (B·L_out, c_in·k), the weight as a (c_out, c_in·k) matrix with the same column order), float64,
    with Z W^T + b equal to the module's output (checked by the caller)."""
    x = x.double()
    weight = conv.weight.detach().double()
    if isinstance(conv, nn.ConvTranspose1d):  # y[o, t] = sum_{i,j} W[i, o, j] x[i, s] where t = s·stride - p + j·d
        (stride,), (pad,), (dilation,), (k,) = conv.stride, conv.padding, conv.dilation, conv.kernel_size
        length = (x.shape[-1] - 1) * stride - 2 * pad + dilation * (k - 1) + conv.output_padding[0] + 1
        patches = torch.zeros(x.shape[0], length, x.shape[1], k, dtype=torch.float64)
        for s in range(x.shape[-1]):
            for j in range(k):
                t = s * stride - pad + j * dilation
                if 0 <= t < length:
                    patches[:, t, :, j] = x[:, :, s]
        return patches.reshape(-1, x.shape[1] * k), weight.transpose(0, 1).reshape(weight.shape[1], -1)
    xp = padded(x, conv)
    if isinstance(conv, nn.Conv2d):
        patches = F.unfold(xp, conv.kernel_size, dilation=conv.dilation, stride=conv.stride).transpose(1, 2)
        return patches.reshape(-1, patches.shape[-1]), weight.reshape(weight.shape[0], -1)
    (stride,), (dilation,), (k,) = conv.stride, conv.dilation, conv.kernel_size
    length = (xp.shape[-1] - dilation * (k - 1) - 1) // stride + 1
    patches = torch.stack([torch.stack([xp[:, :, t * stride + j * dilation] for j in range(k)], dim=-1)
                           for t in range(length)], dim=1)  # (B, L, c_in, k)
    return patches.reshape(-1, x.shape[1] * k), weight.reshape(weight.shape[0], -1)


def damped_inverse(rows: torch.Tensor, damping: float) -> torch.Tensor:
    """(Σ̃ + λI)⁻¹ with Σ̃ the second moment of [rows, 1] and λ = damping · tr(Σ̃) / dim."""
    z = torch.cat([rows, torch.ones(len(rows), 1, dtype=torch.float64)], dim=1)
    sigma = z.T @ z / len(z)
    lam = damping * torch.trace(sigma) / len(sigma)
    return torch.linalg.inv(sigma + lam * torch.eye(len(sigma), dtype=torch.float64))


def reference_unfold_step(conv: nn.Module, x: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[M m] = [G g](Σ̃ + λI)⁻¹ over the unfolded patches; M in the weight matrix's layout."""
    rows, _ = reference_patches(conv, x)
    grad = conv.weight.grad.double()
    grad = grad.transpose(0, 1) if isinstance(conv, nn.ConvTranspose1d) else grad
    matrix = torch.cat([grad.reshape(grad.shape[0], -1), conv.bias.grad.double()[:, None]], dim=1)
    update = matrix @ damped_inverse(rows, damping)
    return update[:, :-1], update[:, -1]


def reference_channel_step(conv: nn.Module, x: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tap [M_k m_k] = [G_k g](Σ̃_c + λI)⁻¹ with Σ̃_c over all input positions; bias Σ_k m_k - (K - 1) g."""
    inverse = damped_inverse(x.double().movedim(1, -1).reshape(-1, x.shape[1]), damping)
    grad = conv.weight.grad.double()
    grad = grad.transpose(0, 1) if isinstance(conv, nn.ConvTranspose1d) else grad  # (c_out, c_in, *k)
    taps = grad.flatten(2)
    bias = conv.bias.grad.double()
    weight_update, bias_update = torch.zeros_like(taps), -(taps.shape[-1] - 1) * bias
    for k in range(taps.shape[-1]):
        update = torch.cat([taps[:, :, k], bias[:, None]], dim=1) @ inverse
        weight_update[:, :, k] = update[:, :-1]
        bias_update = bias_update + update[:, -1]
    return weight_update.reshape(grad.shape[0], -1), bias_update


def as_matrix(conv: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor as the (c_out, c_in·k) matrix of the references."""
    weight = weight.transpose(0, 1) if isinstance(conv, nn.ConvTranspose1d) else weight
    return weight.reshape(weight.shape[0], -1).double()


@pytest.mark.parametrize("name", list(CONVS))
def test_reference_patches_reproduce_the_module(name: str) -> None:
    """The oracle itself: the hand-made patches times the weight matrix are the module's output."""
    make, shape = CONVS[name]
    torch.manual_seed(0)
    conv = make(True).double()
    x = correlated_inputs(shape, 2, seed=1).double()
    rows, matrix = reference_patches(conv, x)
    out = conv(x)
    expected = (rows @ matrix.T + conv.bias.detach()).reshape(out.shape[0], -1, out.shape[1]).transpose(1, 2)
    torch.testing.assert_close(expected, out.reshape(out.shape[0], out.shape[1], -1))


@pytest.mark.parametrize("form", ["unfold", "channel"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", list(CONVS))
def test_a_sgd_step_is_minus_lr_times_the_reference_ap_gradient(name: str, bias: bool, form: str) -> None:
    make, shape = CONVS[name]
    torch.manual_seed(0)
    conv, lr, damping = make(bias), 0.1, 0.05
    x = correlated_inputs(shape, 4, seed=2)
    optimizer = DoPr(conv, base="sgd", lr=lr, damping=damping, momentum=0.0, conv_form=form)
    before = copy.deepcopy(conv)
    out = conv(x)
    (out - torch.randn(out.shape, generator=torch.Generator().manual_seed(3))).pow(2).mean().backward()
    if bias:
        reference = reference_unfold_step if form == "unfold" else reference_channel_step
        expected_weight, expected_bias = reference(conv, x, damping)
    else:
        expected_weight, expected_bias = reference_without_bias(conv, x, damping, form)
    optimizer.step()
    step = as_matrix(conv, conv.weight.detach() - before.weight.detach())
    torch.testing.assert_close(step, -lr * expected_weight, rtol=2e-4, atol=1e-6)
    if bias:
        torch.testing.assert_close((conv.bias - before.bias).detach().double(), -lr * expected_bias,
                                   rtol=2e-4, atol=1e-6)
    assert optimizer.numerics()["skipped"] == 0


def reference_without_bias(conv: nn.Module, x: torch.Tensor, damping: float, form: str) -> tuple[torch.Tensor, None]:
    """G Σ⁻¹ without the homogeneous coordinate (Σ of the rows alone, λ from its own trace)."""
    if form == "unfold":
        rows, _ = reference_patches(conv, x)
    else:
        rows = x.double().movedim(1, -1).reshape(-1, x.shape[1])
    sigma = rows.T @ rows / len(rows)
    inverse = torch.linalg.inv(sigma + damping * torch.trace(sigma) / len(sigma) * torch.eye(len(sigma),
                                                                                            dtype=torch.float64))
    grad = conv.weight.grad.double()
    grad = grad.transpose(0, 1) if isinstance(conv, nn.ConvTranspose1d) else grad
    if form == "unfold":
        return grad.reshape(grad.shape[0], -1) @ inverse, None
    taps = grad.flatten(2)
    per_tap = torch.stack([taps[:, :, k] @ inverse for k in range(taps.shape[-1])], dim=-1)
    return per_tap.reshape(grad.shape[0], -1), None


@pytest.mark.parametrize("name", ["conv1d", "conv2d_strided", "transposed1d_dilated"])
def test_the_unfold_form_is_the_linear_ap_on_the_unfolded_input(name: str) -> None:
    make, shape = CONVS[name]
    torch.manual_seed(0)
    conv = make(True)
    x = correlated_inputs(shape, 4, seed=4)
    rows, matrix = (t.float() for t in reference_patches(conv, x))
    linear = nn.Linear(matrix.shape[1], matrix.shape[0])
    with torch.no_grad():
        linear.weight.copy_(matrix)
        linear.bias.copy_(conv.bias)
    settings = dict(base="sgd", lr=0.1, damping=0.01, momentum=0.0)
    conv_optimizer, linear_optimizer = DoPr(conv, conv_form="unfold", **settings), DoPr(linear, **settings)
    out = conv(x)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    (out - target).pow(2).mean().backward()
    linear_out = linear(rows).reshape(out.shape[0], -1, out.shape[1]).transpose(1, 2).reshape(out.shape)
    (linear_out - target).pow(2).mean().backward()
    conv_optimizer.step()
    linear_optimizer.step()
    torch.testing.assert_close(as_matrix(conv, conv.weight.detach()).float(), linear.weight.detach(),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv.bias.detach(), linear.bias.detach(), rtol=1e-5, atol=1e-6)


# ---- the invariance that defines the conv forms ------------------------------------------------------------

MIX = torch.tensor([[1.0, 0.6, 0.0], [-0.3, 1.0, 0.5], [0.4, 0.0, 2.0]])  # invertible, far from orthogonal


def mixed_twin(conv: nn.Module) -> nn.Module:
    """The conv that gives the same outputs on inputs whose channels are mixed by MIX (weights by MIX⁻¹)."""
    twin = copy.deepcopy(conv)
    unmix = torch.linalg.inv(MIX)
    with torch.no_grad():
        if isinstance(conv, nn.ConvTranspose1d):  # weight (c_in, c_out, k)
            twin.weight.copy_(torch.einsum("ji,jok->iok", unmix, conv.weight))
        else:  # weight (c_out, c_in, *k)
            twin.weight.copy_(torch.einsum("oj...,ji->oi...", conv.weight, unmix))
    return twin


def mix(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bj...->bi...", MIX, x)


def invariance_gap(name: str, optimizer: str, form: str) -> float:
    """After one step from each parametrization: the outputs' difference on fresh inputs, relative to how
    far the step moved them."""
    make, shape = CONVS[name]
    torch.manual_seed(0)
    conv = make(True)
    twin, start = mixed_twin(conv), copy.deepcopy(conv)
    x = correlated_inputs(shape, 8, seed=6)
    torch.testing.assert_close(twin(mix(x)), conv(x), rtol=1e-4, atol=1e-5)  # the same function
    target = torch.randn(conv(x).shape, generator=torch.Generator().manual_seed(7))
    for model, inputs in ((conv, x), (twin, mix(x))):
        if optimizer == "sgd":
            step = torch.optim.SGD(model.parameters(), lr=0.05)
        else:
            step = DoPr(model, base="sgd", lr=0.05, damping=1e-9, momentum=0.0, conv_form=form)
        (model(inputs) - target).pow(2).mean().backward()
        step.step()
    fresh = correlated_inputs(shape, 8, seed=8)
    with torch.no_grad():
        moved = (conv(fresh) - start(fresh)).abs().max()
        return float((conv(fresh) - twin(mix(fresh))).abs().max() / moved)


@pytest.mark.parametrize("form", ["channel", "unfold"])
@pytest.mark.parametrize("name", list(CONVS))
def test_mixing_the_input_channels_leaves_the_dopr_step_unchanged(name: str, form: str) -> None:
    assert invariance_gap(name, "dopr-sgd", form) < 2e-3
    assert invariance_gap(name, "sgd", form) > 0.1  # what the invariance buys: plain SGD is far off


def test_the_invariance_check_fails_with_ap_replaced_by_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted breakage: Σ̃ read as the identity (AP a mere 1/(1+λ) scaling) fails the check above."""
    monkeypatch.setattr(InputSums, "second_moment", lambda self: torch.eye(self.outer.shape[-1]).expand_as(self.outer))
    for form in ("channel", "unfold"):
        assert invariance_gap("conv2d", "dopr-sgd", form) > 0.1


# ---- coverage, options, warning ----------------------------------------------------------------------------


def pixel_model() -> nn.Sequential:
    """A conv stem with GroupNorm, a grouped conv, and a linear readout of the flattened 32x16x16 map."""
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(32 * 16 * 16, 4))


def test_coverage_lists_conv_forms_norms_grouped_convs_and_a_readout_over_max_factor_dim() -> None:
    with pytest.warns(UserWarning, match=r"DoPr covers only 2% of the parameters \(896 of 38372\); the rest get the "
                                         r"base optimizer's raw gradient, so DoPr-adamw ≈ adamw here"):
        optimizer = DoPr(pixel_model(), base="adamw", conv_form="channel")
    rows = {r["parameter"]: r["preconditioning"] for r in optimizer.coverage()}
    assert rows == {
        "0.weight": "AP (channel) + adamw", "0.bias": "AP (channel) + adamw",
        "1.weight": "adamw (raw gradient)", "1.bias": "adamw (raw gradient)",
        "3.weight": "adamw (raw gradient: groups=2 not covered)",
        "3.bias": "adamw (raw gradient: groups=2 not covered)",
        "5.weight": "adamw (raw gradient: input 8192 > max_factor_dim 4096)",
        "5.bias": "adamw (raw gradient: input 8192 > max_factor_dim 4096)",
    }
    assert optimizer.format_coverage().splitlines()[-1] == (
        "2 of 8 parameter tensors get AP (1 conv layers hooked); 2% of the parameters by count")
    unfolded = DoPr(pixel_model(), base="muon", conv_form="unfold", max_factor_dim=8192)  # 88% covered: no warning
    rows = {r["parameter"]: r["preconditioning"] for r in unfolded.coverage()}
    assert rows["0.weight"] == "AP (unfold) + adamw"  # Muon takes matrices only: conv weights go to AdamW
    assert rows["5.weight"] == "AP + muon"
    assert "1 conv layers hooked, 1 linear layers hooked" in unfolded.format_coverage()


def test_an_unfold_factor_over_max_factor_dim_is_named() -> None:
    with pytest.warns(UserWarning, match=r"covers only 0% of the parameters \(0 of 4616\)"):
        rows = DoPr(nn.Conv2d(64, 8, 3), conv_form="unfold", max_factor_dim=512).coverage()
    assert rows[0]["preconditioning"] == "adamw (raw gradient: unfolded input 576 > max_factor_dim 512)"


def test_a_mostly_covered_model_builds_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DoPr(nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 4 * 4, 2)))


@pytest.mark.parametrize("options, message", [
    (dict(conv_form="im2col"), r"Invalid conv_form: 'im2col' \(valid: channel, unfold\)"),
    (dict(max_factor_dim=0), r"Invalid max_factor_dim: 0 \(must be an integer >= 1\)"),
    (dict(max_factor_dim=4096.0), r"Invalid max_factor_dim: 4096.0"),
])
def test_bad_conv_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DoPr(nn.Conv1d(2, 2, 3), **options)


def test_a_registered_adapter_covers_a_module_type_of_ones_own(monkeypatch: pytest.MonkeyPatch) -> None:
    class Affine(nn.Module):  # a linear map that is not an nn.Linear
        def __init__(self) -> None:
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.randn(2, 3)), nn.Parameter(torch.zeros(2))
            self.in_features = 3

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight.T + self.bias

    torch.manual_seed(0)
    own, linear = Affine(), nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(own.weight)
        linear.bias.copy_(own.bias)
    with pytest.warns(UserWarning, match="covers only 0%"):
        assert DoPr(own).coverage()[0]["preconditioning"] == "adamw (raw gradient)"
    monkeypatch.setitem(ADAPTERS, Affine, lambda module, options: LinearAdapter(module))
    x = correlated_inputs((3,), 16, seed=9)
    for model in (own, linear):
        optimizer = DoPr(model, base="sgd", lr=0.1)
        model(x).pow(2).sum().backward()
        optimizer.step()
    assert optimizer.coverage()[0]["preconditioning"] == "AP + sgd"
    torch.testing.assert_close(own.weight, linear.weight)


# ---- resuming -------------------------------------------------------------------------------------------------


def unet_like() -> nn.Sequential:
    """Conv1d, GroupNorm, a stride-2 downsampler and a ConvTranspose1d upsampler, a 1x1 head."""
    return nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.Mish(),
                         nn.Conv1d(8, 8, 3, stride=2, padding=1), nn.Mish(), nn.ConvTranspose1d(8, 8, 4, 2, 1),
                         nn.Mish(), nn.Conv1d(8, 2, 1))


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        inputs, targets = torch.randn(4, 3, 16, generator=generator) + 1.0, torch.randn(4, 2, 16, generator=generator)
        optimizer.zero_grad()
        (model(inputs) - targets).pow(2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize("form", ["channel", "unfold"])
@pytest.mark.parametrize("amortized", [False, True])
def test_state_dict_resume_with_conv_layers_is_bit_identical(form: str, amortized: bool, tmp_path) -> None:
    options = dict(base="adamw", lr=1e-2, conv_form=form, **(dict(cov_ema=0.9, refresh_every=3) if amortized else {}))
    torch.manual_seed(0)
    model = unet_like()
    optimizer = DoPr(model, **options)
    train_steps(model, optimizer, 4, seed=1)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "state.pt")
    train_steps(model, optimizer, 4, seed=2)

    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed_model = unet_like()
    resumed_model.load_state_dict(saved["model"])
    resumed = DoPr(resumed_model, **options)
    resumed.load_state_dict(saved["optimizer"])
    train_steps(resumed_model, resumed, 4, seed=2)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    assert resumed.numerics() == {**optimizer.numerics(), "skipped": 0}
    if amortized:
        assert {"sigma", "inverse"} <= set(resumed.state[resumed_model[5].weight])


def test_a_state_saved_with_another_conv_form_is_refused() -> None:
    model = unet_like()
    optimizer = DoPr(model, conv_form="unfold")
    train_steps(model, optimizer, 1, seed=1)
    with pytest.raises(ValueError, match=r"saved with conv_form='unfold', this optimizer has conv_form='channel'"):
        DoPr(model, conv_form="channel").load_state_dict(optimizer.state_dict())


def test_the_default_conv_form_is_channel() -> None:
    rows = DoPr(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))).coverage()
    assert rows[0]["preconditioning"] == "AP (channel) + adamw"


class Interrupt(Exception):
    pass


def test_a_run_begun_when_unfold_was_the_default_resumes_with_unfold(demo_file, tmp_path: Path, one_thread) -> None:
    from dopr_robot.config import TrainConfig
    from dopr_robot.train import train

    data = demo_file("Reach-v0", 3, cameras=["agentview"], image_size=(16, 16), env_kwargs={"horizon": 10})
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=6, batch_size=4, checkpoint_every=2,
                         optimizer="dopr-adamw", obs_keys=["agentview_image", "robot_state"], val_every=0,
                         policy_options={"width": 8, "depth": 1, "encoder_channels": 4, "encoder_features": 4})

    def stop_at_3(policy, step: int) -> dict:
        if step == 3:
            raise Interrupt
        return {}

    begun = tmp_path / "run"
    with pytest.raises(Interrupt):  # conv_form named, then removed below: what the old default wrote
        train(replace(config, optimizer_options={"conv_form": "unfold"}), evaluator=stop_at_3, evaluate_every=1, progress=False, device="cpu")
    checkpoint = torch.load(begun / "checkpoint.pt", weights_only=True)
    checkpoint["config"]["optimizer_options"] = {}
    torch.save(checkpoint, begun / "checkpoint.pt")
    (begun / "config.json").write_text(config.to_json() + "\n")

    train(config, resume=True, progress=False, device="cpu")  # the old code: "saved with conv_form='unfold'"
    resumed = torch.load(begun / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 6 and resumed["optimizer"]["param_groups"][0]["conv_form"] == "unfold"


@pytest.mark.parametrize("form", ["channel", "unfold"])
@pytest.mark.parametrize("options", [{}, {"refresh_every": 3, "cov_ema": 0.9}], ids=["exact", "amortized"])
def test_a_step_with_conv_layers_converts_no_tensor_to_a_python_number(monkeypatch, form: str, options: dict) -> None:
    """As for linear layers (test_optim_no_sync.py): the conv adapters add no host synchronization."""
    guards = runpy.run_path(str(Path(__file__).with_name("test_optim_no_sync.py")))
    torch.manual_seed(0)
    model = unet_like()
    optimizer = DoPr(model, base="adamw", lr=1e-3, conv_form=form, **options)
    train_steps(model, optimizer, 1, seed=1)  # creates the state, outside the guard
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        optimizer.zero_grad()
        (model(torch.randn(4, 3, 16, generator=generator)) - 1.0).pow(2).mean().backward()
        with monkeypatch.context() as patch:
            guards["forbid_host_conversions"](patch, guards["host_step_counters"](optimizer))
            optimizer.step()
    assert optimizer.numerics()["skipped"] == 0
