"""The regressors and the flow heads share one trunk per architecture, and checkpoints saved with
the regressors' earlier parameter names still load."""

from __future__ import annotations

import pytest
import torch

from policies import make_policy
from policies.mlp import MLPTrunk
from policies.transformer import TransformerTrunk

SMALL = {"mlp": {"width": 16, "depth": 2}, "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 2}}

# The regressors' parameter names as checkpoints written before the trunk was shared hold them.
OLD_NAMES = {"mlp": {"trunk.embed.": "embed.", "trunk.blocks.": "blocks.", "trunk.norm.": "head_norm."},
             "transformer": {"trunk.embed.": "embed.", "trunk.position": "position", "trunk.blocks.": "blocks.",
                             "trunk.norm.": "head_norm."}}


@pytest.mark.parametrize("trunk, trunk_class", [("mlp", MLPTrunk), ("transformer", TransformerTrunk)])
def test_a_regressor_and_its_flow_policy_use_the_same_trunk(trunk: str, trunk_class: type) -> None:
    regressor = make_policy(trunk, 5, 3, history=2, chunk=4, **SMALL[trunk])
    flow = make_policy(f"flow-{trunk}", 5, 3, history=2, chunk=4, **SMALL[trunk])
    assert type(regressor.trunk) is trunk_class and type(flow.trunk) is trunk_class
    shapes = lambda module: [(n, tuple(p.shape)) for n, p in module.named_parameters()]  # noqa: E731
    assert shapes(regressor.trunk) == shapes(flow.trunk)
    obs = torch.randn(6, 2, 5)
    flow.trunk.load_state_dict(regressor.trunk.state_dict())
    torch.testing.assert_close(flow.trunk(obs), regressor.trunk(obs), rtol=0, atol=0)


@pytest.mark.parametrize("trunk", ["mlp", "transformer"])
def test_a_state_dict_with_the_earlier_names_loads(trunk: str) -> None:
    torch.manual_seed(0)
    source = make_policy(trunk, 5, 3, history=2, chunk=4, **SMALL[trunk])
    old = {}
    for key, value in source.state_dict().items():
        new_prefix = next((p for p in OLD_NAMES[trunk] if key.startswith(p)), None)
        old[OLD_NAMES[trunk][new_prefix] + key[len(new_prefix):] if new_prefix else key] = value
    assert "head_norm.weight" in old and not any(k.startswith("trunk.") for k in old)
    torch.manual_seed(1)
    target = make_policy(trunk, 5, 3, history=2, chunk=4, **SMALL[trunk])
    target.load_state_dict(old)  # strict: every old key found a new home
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert torch.equal(a, b), name
    obs = torch.randn(4, 2, 5)
    torch.testing.assert_close(target.predict(obs), source.predict(obs), rtol=0, atol=0)
