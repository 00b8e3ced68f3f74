"""Residual MLP policy: the flattened observation history in, the flattened action chunk out.

:class:`MLPTrunk` (history -> features) is shared with the flow head (``flow-mlp``), so the two
policies differ in their head and objective only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from torch import Tensor, nn

from policies.base import Policy
from policies.encoders import ImageEncoderConfig


@dataclass(frozen=True)
class MLPTrunkConfig:
    width: int = 256  # hidden width of every residual block
    depth: int = 3  # number of residual blocks
    dropout: float = 0.0  # dropout inside each block

    def check_trunk(self) -> None:
        if self.width < 1 or self.depth < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid MLP config {self}: need width >= 1, depth >= 0, 0 <= dropout < 1")


@dataclass(frozen=True)
class MLPConfig(ImageEncoderConfig, MLPTrunkConfig):
    """The residual MLP's options, then the image encoder's (used with images only)."""

    def __post_init__(self) -> None:
        self.check_trunk()
        self.check_encoder()


class ResidualBlock(nn.Module):
    """x + Linear(GELU(Linear(LayerNorm(x)))) (pre-norm), width -> width."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.out(nn.functional.gelu(self.hidden(self.norm(x)))))


class MLPTrunk(nn.Module):
    """(B, H, D) -> flatten (history steps side by side; D the policy's ``step_dim``) -> Linear -> residual blocks -> LayerNorm -> features (B, width)."""

    def __init__(self, in_dim: int, config: MLPConfig):
        super().__init__()
        self.embed = nn.Linear(in_dim, config.width)
        self.blocks = nn.Sequential(*(ResidualBlock(config.width, config.dropout) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.width)

    def forward(self, obs: Tensor) -> Tensor:
        return self.norm(self.blocks(self.embed(obs.flatten(start_dim=1))))


class MLPPolicy(Policy):
    """(:meth:`Policy.encode`) -> :class:`MLPTrunk` -> Linear: (B, H, D) [+ images] -> (B, C, A)."""

    # Parameter names before the trunk was shared with the flow head (checkpoints of that time load).
    LEGACY_NAMES = {"embed.": "trunk.embed.", "blocks.": "trunk.blocks.", "head_norm.": "trunk.norm."}

    def __init__(self, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 1, config: MLPConfig = MLPConfig(),
                 image_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(obs_dim, act_dim, history, chunk, image_shapes, config)
        self.config = config
        self.trunk = MLPTrunk(history * self.step_dim, config)
        self.head = nn.Linear(config.width, chunk * act_dim)

    def forward(self, obs: Tensor, images: Mapping[str, Tensor] | None = None) -> Tensor:
        return self.head(self.trunk(self.encode(obs, images))).view(-1, self.chunk, self.act_dim)
