"""Policies for behavior cloning: observation history in, action chunk out, normalizers inside.

Every policy is a :class:`~policies.base.Policy`: ``loss(batch)`` for training, ``predict(obs_history)``
for inference (raw units in and out). Adding one = a module with a config dataclass and a class,
plus one line in ``POLICIES``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, Sequence

from policies.base import Policy
from policies.encoders import ImageEncoderConfig
from policies.flow import (HEADS, FlowMLPConfig, FlowMLPPolicy, FlowPolicy, FlowTransformerConfig, FlowTransformerPolicy,
                           FlowUNetConfig, FlowUNetPolicy)
from policies.mlp import MLPConfig, MLPPolicy
from policies.normalizer import Normalizer
from policies.transformer import TransformerConfig, TransformerPolicy

# name -> (policy class, config dataclass)
POLICIES: dict[str, tuple[type[Policy], type]] = {
    "mlp": (MLPPolicy, MLPConfig),
    "transformer": (TransformerPolicy, TransformerConfig),
    "flow-mlp": (FlowMLPPolicy, FlowMLPConfig),  # the trunks above with a flow-matching head (policies/flow.py)
    "flow-transformer": (FlowTransformerPolicy, FlowTransformerConfig),
    "flow-unet": (FlowUNetPolicy, FlowUNetConfig),  # Diffusion Policy's temporal U-Net as the flow head (policies/unet.py)
}


def policy_config_fields(name: str) -> list[str]:
    """The config field names of a registered policy."""
    return [f.name for f in fields(POLICIES[name][1])]


def check_policy_shape(name: str, history: int, chunk: int, **config: Any) -> None:
    """Raise a ValueError unless policy ``name`` with these options can take a ``history`` and ``chunk``
    (a U-Net head halves the chunk): the check a run makes before it loads any data."""
    policy_config = POLICIES[name][1](**config)
    check_chunk = getattr(policy_config, "check_chunk", None)
    if check_chunk is not None:
        check_chunk(chunk)


def make_policy(name: str, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 1,
                image_shapes: Mapping[str, Sequence[int]] | None = None, **config: Any) -> Policy:
    """Build a registered policy; ``config`` are fields of its config dataclass. ``image_shapes``
    {key: (h, w, 3)}: the cameras it sees besides the low-dim observation (one encoder each)."""
    if name not in POLICIES:
        raise ValueError(f"Unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    if history < 1 or chunk < 1:
        raise ValueError(f"history and chunk must be >= 1, got history={history}, chunk={chunk}")
    policy_class, config_class = POLICIES[name]
    unknown = sorted(set(config) - set(policy_config_fields(name)))
    if unknown:
        raise ValueError(f"policy {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(policy_config_fields(name))}")
    return policy_class(obs_dim, act_dim, history, chunk, config=config_class(**config), image_shapes=image_shapes)


__all__ = ["HEADS", "POLICIES", "FlowMLPConfig", "FlowMLPPolicy", "FlowPolicy", "FlowTransformerConfig",
           "FlowTransformerPolicy", "FlowUNetConfig", "FlowUNetPolicy", "check_policy_shape", "MLPConfig", "MLPPolicy", "ImageEncoderConfig", "Normalizer", "Policy", "TransformerConfig",
           "TransformerPolicy", "make_policy", "policy_config_fields"]
