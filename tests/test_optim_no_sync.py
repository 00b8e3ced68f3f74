"""DoPr.step() never waits for the device: no tensor becomes a Python number inside it.

On a GPU every such conversion (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``) is a
host synchronization. On CPU the same code path runs, so a test that forbids those conversions here
proves the GPU path is free of them; the CUDA test does the same with torch's sync debug mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dopr_robot.optim import DoPr
from dopr_robot.optimizer_demo import DEMO_MODELS

CONVERSIONS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")


class HostConversion(AssertionError):
    pass


def forbid_host_conversions(monkeypatch, allowed: set[int]) -> None:
    """Make every tensor-to-Python conversion raise, except on tensors in ``allowed`` (by id)."""
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def guarded(self, *args, _original=original, _name=name, **kwargs):
            if id(self) not in allowed:
                raise HostConversion(f"Tensor.{_name} called on a {tuple(self.shape)} tensor inside step()")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, guarded)


def host_step_counters(optimizer: DoPr) -> set[int]:
    """torch's Adam/AdamW keep their step counters on the CPU by design (reading them is no device sync)."""
    parts = [optimizer.base, getattr(optimizer.base, "muon", None), getattr(optimizer.base, "adamw", None)]
    return {id(state["step"]) for part in parts if part is not None for state in part.state.values()
            if isinstance(state.get("step"), torch.Tensor) and state["step"].device.type == "cpu"}


@pytest.mark.parametrize("base", ["adamw", "muon", "signum", "sgd"])
@pytest.mark.parametrize("options", [{}, {"refresh_every": 3, "cov_ema": 0.9}], ids=["exact", "amortized"])
@pytest.mark.parametrize("model_name", ["mlp", "attention"])
def test_step_converts_no_tensor_to_a_python_number(monkeypatch, base: str, options: dict, model_name: str) -> None:
    torch.manual_seed(0)
    model = DEMO_MODELS[model_name]()
    optimizer = DoPr(model, base=base, lr=1e-3, **options)
    inputs = torch.randn(16, 17) if model_name == "mlp" else torch.randn(4, 8, 17)

    def backward() -> None:
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()

    backward()
    optimizer.step()  # creates the state, outside the guard
    for step in range(4):
        backward()
        with monkeypatch.context() as patch:
            forbid_host_conversions(patch, host_step_counters(optimizer))
            optimizer.step()
    assert optimizer.numerics()["layer_steps"] > 0  # numerics() is where the counters are read


def test_the_guard_catches_a_conversion(monkeypatch) -> None:
    """The test above can fail: a step that reads a tensor as a number is caught."""
    layer = nn.Linear(3, 2)
    optimizer = DoPr(layer, base="sgd", lr=0.1)
    layer(torch.randn(4, 3)).sum().backward()
    forbid_host_conversions(monkeypatch, set())
    monkeypatch.setattr(DoPr, "_records_now", lambda self: bool(self._layers[0].sums.count[0] >= 0))
    with pytest.raises(HostConversion):
        optimizer.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("options", [{}, {"refresh_every": 3, "cov_ema": 0.9}], ids=["exact", "amortized"])
def test_cuda_step_makes_no_host_synchronization(options: dict) -> None:
    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]().cuda()
    optimizer = DoPr(model, base="adamw", lr=1e-3, **options)
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
    assert optimizer.numerics()["skipped"] == 0
