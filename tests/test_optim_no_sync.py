"""DoPr.step() never waits for the device: no tensor becomes a Python number inside it.

On a GPU every such conversion (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``) is a
host synchronization. On CPU the same code path runs, so a test that forbids those conversions here
proves the GPU path is free of them; the CUDA tests do the same with torch's sync debug mode, and
catch the waits it cannot see (inside a library) by the time a step takes while the device is busy.
"""

from __future__ import annotations

import time

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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("options", [{}, {"refresh_every": 3, "cov_ema": 0.9}], ids=["exact", "amortized"])
def test_cuda_step_returns_while_the_device_is_still_busy(options: dict) -> None:
    """A wait the sync debug mode does not see (a library reading a status back to the host, as MAGMA's
    batched Cholesky solves do) shows as time: with a long kernel queued first, a step that never waits
    for the device returns long before that kernel ends."""
    torch.manual_seed(0)
    model = DEMO_MODELS["mlp"]().cuda()
    optimizer = DoPr(model, base="adamw", lr=1e-3, **options)
    inputs = torch.randn(64, 17, device="cuda")

    def backward() -> None:
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()

    for _ in range(4):  # state created, kernels loaded, memory cached: no allocation waits later
        backward()
        optimizer.step()
    torch.cuda.synchronize()
    cycles = 500_000_000
    start = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    busy = time.perf_counter() - start  # how long that kernel keeps the device busy (~0.3 s)
    for step in range(3):  # with refresh_every=3, a refresh step and the steps between
        backward()
        torch.cuda.synchronize()
        torch.cuda._sleep(cycles)
        start = time.perf_counter()
        optimizer.step()
        queued = time.perf_counter() - start
        torch.cuda.synchronize()
        assert queued < 0.5 * busy, (f"step {step} held the host {queued:.3f} s while the device was busy "
                                     f"for {busy:.3f} s: it waited for the device")
