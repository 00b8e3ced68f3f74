"""Policies: shapes, normalizers inside, masked loss, registry errors, DoPr coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dopr_robot.optim import DoPr
from policies import POLICIES, FlowPolicy, make_policy
from policies.normalizer import Normalizer

TINY = {"mlp": {"width": 32, "depth": 2}, "transformer": {"d_model": 16, "n_layers": 2, "n_heads": 2}}
# Regressors: forward maps observations to actions (flow policies: tests/test_policies_flow.py).
REGRESSORS = [name for name, (cls, _) in POLICIES.items() if not issubclass(cls, FlowPolicy)]


def batch(size: int = 5, history: int = 3, chunk: int = 4, obs_dim: int = 6, act_dim: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randn(size, history, obs_dim, generator=generator),
        "obs_mask": torch.ones(size, history, dtype=torch.bool),
        "actions": torch.randn(size, chunk, act_dim, generator=generator),
        "action_mask": torch.ones(size, chunk, dtype=torch.bool),
    }


@pytest.mark.parametrize("name", REGRESSORS)
def test_predict_shape_and_normalizers_travel_in_the_state_dict(name: str) -> None:
    torch.manual_seed(0)
    policy = make_policy(name, 6, 2, history=3, chunk=4, **TINY[name]).eval()
    policy.obs_normalizer.set_statistics(torch.arange(6.0), torch.full((6,), 2.0))
    policy.action_normalizer.set_statistics(torch.tensor([10.0, -10.0]), torch.tensor([0.5, 3.0]))
    obs = batch()["obs"]
    actions = policy.predict(obs)
    assert actions.shape == (5, 4, 2)
    # The normalizers written out by hand: observations (x - arange(6)) / 2 in, actions * std + mean out.
    expected = policy((obs - torch.arange(6.0)) / 2.0) * torch.tensor([0.5, 3.0]) + torch.tensor([10.0, -10.0])
    torch.testing.assert_close(actions, expected)

    state = policy.state_dict()
    assert torch.equal(state["action_normalizer.mean"], torch.tensor([10.0, -10.0]))
    clone = make_policy(name, 6, 2, history=3, chunk=4, **TINY[name]).eval()
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.predict(obs), actions)


@pytest.mark.parametrize("name", REGRESSORS)
def test_loss_ignores_padded_chunk_steps(name: str) -> None:
    torch.manual_seed(0)
    policy = make_policy(name, 6, 2, history=3, chunk=4, **TINY[name])
    data = batch()
    data["action_mask"][:, 2:] = False
    loss = policy.loss(data)
    data["actions"][:, 2:] += 100.0
    torch.testing.assert_close(policy.loss(data), loss)
    data["actions"][:, 0] += 1.0
    assert not torch.isclose(policy.loss(data), loss)


@pytest.mark.parametrize("name", REGRESSORS)
def test_the_whole_history_is_used(name: str) -> None:
    torch.manual_seed(0)
    policy = make_policy(name, 6, 2, history=3, chunk=1, **TINY[name]).eval()
    obs = batch(chunk=1)["obs"]
    changed = obs.clone()
    changed[:, 0] += 1.0  # the oldest observation
    assert not torch.allclose(policy.predict(obs), policy.predict(changed))


def test_transformer_matmuls_are_all_preconditioned() -> None:
    policy = make_policy("transformer", 6, 2, history=3, chunk=4, **TINY["transformer"])
    rows = {r["parameter"]: r["preconditioning"] for r in DoPr(policy).coverage()}
    linear_weights = {n for n, m in policy.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear_weights  # embed, qkv, out, mlp.0, mlp.2, head
    for name in linear_weights:
        assert rows[f"{name}.weight"] == "AP + adamw" and rows[f"{name}.bias"] == "AP + adamw"
    assert rows["trunk.position"] == "adamw (raw gradient)"
    assert rows["trunk.blocks.0.attn_norm.weight"] == "adamw (raw gradient)"
    assert "trunk.blocks.0.attn.qkv.weight" in rows  # q, k, v fused: one activation covariance


def test_normalizer_buffers_are_not_trained() -> None:
    policy = make_policy("mlp", 6, 2, **TINY["mlp"])
    names = {n for n, _ in policy.named_parameters()}
    assert not any("normalizer" in n for n in names)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="cnn"), r"Unknown policy 'cnn'; valid: mlp, transformer"),
        (dict(name="mlp", layers=3), r"policy 'mlp' has no option\(s\) layers; valid: width, depth, dropout"),
        (dict(name="mlp", history=0), r"history and chunk must be >= 1"),
        (dict(name="transformer", d_model=30, n_heads=4), r"d_model must be a multiple of n_heads"),
    ],
)
def test_make_policy_errors(kwargs: dict, message: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        make_policy(name, 6, 2, **kwargs)


def test_predict_checks_the_history_shape() -> None:
    policy = make_policy("mlp", 6, 2, history=3, **TINY["mlp"])
    with pytest.raises(ValueError, match=r"expected observation histories of shape \(B, 3, 6\), got \(5, 2, 6\)"):
        policy.predict(torch.zeros(5, 2, 6))


def test_normalizer_against_numpy_statistics() -> None:
    """Statistics computed here with numpy: normalized data has mean 0 and std 1 per dimension, a
    constant dimension's std is floored at 1e-3, and unnormalize inverts normalize."""
    data = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [8.0, -40.0, 5.0], [0.0, 0.0, 5.0]])
    mean, std = data.mean(axis=0), data.std(axis=0)
    np.testing.assert_allclose(mean, [3.0, 0.0, 5.0])  # known numbers
    np.testing.assert_allclose(std[:2], [np.sqrt(9.5), np.sqrt(650.0)])
    normalizer = Normalizer(3)
    normalizer.set_statistics(mean, std)
    np.testing.assert_array_equal(normalizer.std.numpy(), np.float32([np.sqrt(9.5), np.sqrt(650.0), 1e-3]))
    x = torch.tensor(data, dtype=torch.float32)
    normalized = normalizer.normalize(x).numpy()
    np.testing.assert_allclose(normalized[:, :2], (data[:, :2] - mean[:2]) / std[:2], rtol=1e-6)
    np.testing.assert_allclose(normalized[:, :2].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalized[:, :2].std(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(normalized[:, 2], 0.0)
    np.testing.assert_allclose(normalizer.normalize(torch.tensor([[3.0, 0.0, 5.002]])).numpy(),
                               [[0.0, 0.0, 2.0]], atol=1e-3)  # (5.002 - 5) / 1e-3
    np.testing.assert_allclose(normalizer.unnormalize(torch.tensor([[1.0, -2.0, 1000.0]])).numpy(),
                               [[3.0 + np.sqrt(9.5), -2.0 * np.sqrt(650.0), 6.0]], rtol=1e-6)


def test_normalizer_refuses_nan_statistics() -> None:
    policy = make_policy("mlp", 2, 1, **TINY["mlp"])
    with pytest.raises(ValueError, match="NaN or Inf"):
        policy.obs_normalizer.set_statistics([0.0, float("nan")], [1.0, 1.0])
