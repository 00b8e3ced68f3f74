"""Observation/action normalization that travels inside the policy (buffers, saved with weights)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalizer(nn.Module):
    """``(x - mean) / std`` and its inverse, with ``mean`` and ``std`` as buffers of shape (D,)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set_statistics(self, mean, std, min_std: float = 1e-3) -> None:
        """Load statistics (array-likes of shape (D,)); std is floored so constant dims stay finite."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(self.mean.shape)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(self.std.shape)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("normalization statistics contain NaN or Inf")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=min_std))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean
