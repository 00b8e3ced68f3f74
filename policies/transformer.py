"""Transformer policy: causal self-attention over the observation history, an action chunk out.

:class:`TransformerTrunk` (history -> features) is shared with the flow head (``flow-transformer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from policies.base import Policy
from policies.encoders import ImageEncoderConfig


@dataclass(frozen=True)
class TransformerTrunkConfig:
    d_model: int = 128  # token width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads (d_model must divide evenly)
    mlp_ratio: int = 4  # hidden width of each block's MLP, in multiples of d_model
    dropout: float = 0.0

    def check_trunk(self) -> None:
        if self.d_model < 1 or self.n_layers < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise ValueError(f"invalid transformer config {self}: d_model must be a multiple of n_heads, all >= 1")
        if self.mlp_ratio < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid transformer config {self}: need mlp_ratio >= 1 and 0 <= dropout < 1")


@dataclass(frozen=True)
class TransformerConfig(ImageEncoderConfig, TransformerTrunkConfig):
    """The transformer's options, then the image encoder's (used with images only)."""

    def __post_init__(self) -> None:
        self.check_trunk()
        self.check_encoder()


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with q, k, v from one fused ``nn.Linear`` (one shared input, so
    one activation covariance for DoPr) and an ``nn.Linear`` output projection. (B, T, E) -> (B, T, E)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.n_heads, width // self.n_heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(attended.transpose(1, 2).reshape(batch, tokens, width))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads, config.dropout)
        self.mlp_norm = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.mlp_ratio * config.d_model),
            nn.GELU(),
            nn.Linear(config.mlp_ratio * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TransformerTrunk(nn.Module):
    """One token per history step (its observation, with images the policy's ``step_dim`` vector) (oldest first, learned positions), causal blocks,
    LayerNorm; the last token's output is the features. (B, H, D) -> (B, d_model)."""

    def __init__(self, obs_dim: int, history: int, config: TransformerConfig):
        super().__init__()
        self.embed = nn.Linear(obs_dim, config.d_model)
        self.position = nn.Parameter(torch.zeros(history, config.d_model))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.n_layers)))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, obs: Tensor) -> Tensor:
        return self.norm(self.blocks(self.embed(obs) + self.position)[:, -1])


class TransformerPolicy(Policy):
    """(:meth:`Policy.encode`) -> :class:`TransformerTrunk` -> Linear: the last token predicts the whole
    chunk. (B, H, D) [+ images] -> (B, C, A)."""

    # Parameter names before the trunk was shared with the flow head (checkpoints of that time load).
    LEGACY_NAMES = {"embed.": "trunk.embed.", "position": "trunk.position", "blocks.": "trunk.blocks.",
                    "head_norm.": "trunk.norm."}

    def __init__(self, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 1,
                 config: TransformerConfig = TransformerConfig(), image_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(obs_dim, act_dim, history, chunk, image_shapes, config)
        self.config = config
        self.trunk = TransformerTrunk(self.step_dim, history, config)
        self.head = nn.Linear(config.d_model, chunk * act_dim)

    def forward(self, obs: Tensor, images: Mapping[str, Tensor] | None = None) -> Tensor:
        return self.head(self.trunk(self.encode(obs, images))).view(-1, self.chunk, self.act_dim)
