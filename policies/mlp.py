"""Residual MLP policy: the flattened observation history in, the flattened action chunk out."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from policies.base import Policy


@dataclass(frozen=True)
class MLPConfig:
    width: int = 256  # hidden width of every residual block
    depth: int = 3  # number of residual blocks
    dropout: float = 0.0  # dropout inside each block

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid MLP config {self}: need width >= 1, depth >= 0, 0 <= dropout < 1")


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


class MLPPolicy(Policy):
    """(B, H, D) -> flatten -> Linear -> residual blocks -> LayerNorm -> Linear -> (B, C, A)."""

    def __init__(self, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 1, config: MLPConfig = MLPConfig()):
        super().__init__(obs_dim, act_dim, history, chunk)
        self.config = config
        self.embed = nn.Linear(history * obs_dim, config.width)
        self.blocks = nn.Sequential(*(ResidualBlock(config.width, config.dropout) for _ in range(config.depth)))
        self.head_norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, chunk * act_dim)

    def forward(self, obs: Tensor) -> Tensor:
        features = self.blocks(self.embed(obs.flatten(start_dim=1)))
        return self.head(self.head_norm(features)).view(-1, self.chunk, self.act_dim)
