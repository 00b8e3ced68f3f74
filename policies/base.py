"""What every policy shares: normalizers inside the module, the BC loss, one inference call."""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

from policies.normalizer import Normalizer

# Where sampling policies draw noise: one generator for the batch, one per row, or None (torch's global RNG).
Generators = Union[torch.Generator, Sequence[Union[torch.Generator, None]], None]


class Policy(nn.Module):
    """Maps a history of observations to a chunk of future actions.

    Subclasses implement ``forward(obs)`` on *normalized* observations, (B, H, D) -> (B, C, A)
    normalized actions. Shapes: B batch, H = ``history``, D = ``obs_dim``, C = ``chunk``,
    A = ``act_dim``. Policies that sample (:mod:`policies.flow`) override ``loss``, ``predict`` and
    ``validation_metrics`` instead, and their ``forward`` is the network call their loss makes.
    """

    # Old parameter-name prefix -> new, for state dicts saved before a module was renamed.
    LEGACY_NAMES: dict[str, str] = {}

    def __init__(self, obs_dim: int, act_dim: int, history: int, chunk: int):
        super().__init__()
        self.obs_dim, self.act_dim, self.history, self.chunk = obs_dim, act_dim, history, chunk
        self.obs_normalizer = Normalizer(obs_dim)
        self.action_normalizer = Normalizer(act_dim)
        if self.LEGACY_NAMES:
            self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    def loss(self, batch: dict[str, Tensor], forward: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Mean squared error in normalized action units over the valid (unpadded) chunk steps.

        ``batch``: "obs" (B, H, D), "actions" (B, C, A), "action_mask" (B, C) bool. ``forward``
        replaces ``self`` for the network call, e.g. a DistributedDataParallel wrapper of it.
        """
        predicted = (forward or self)(self.obs_normalizer.normalize(batch["obs"]))
        target = self.action_normalizer.normalize(batch["actions"])
        return masked_mean((predicted - target).pow(2).mean(dim=-1), batch["action_mask"])

    @torch.no_grad()
    def validation_metrics(self, batch: dict[str, Tensor], generator: Generators = None) -> dict[str, Tensor]:
        """Held-out numbers for one batch, as 0-d tensors: ``val_loss``, the BC loss. Policies that
        sample (:mod:`policies.flow`) draw their noise from ``generator`` and report more keys."""
        return {"val_loss": self.loss(batch)}

    @torch.no_grad()
    def predict(self, obs_history: Tensor, generator: Generators = None) -> Tensor:
        """Actions in environment units for a batch of observation histories.

        ``obs_history`` (B, H, D) raw observations, oldest first -> (B, C, A): the predicted chunk,
        its first row the action to take now. ``generator``: where a sampling policy draws its noise
        (one ``torch.Generator`` for the batch, or a sequence of B, one per row; None: torch's global
        RNG); a deterministic policy ignores it, so callers pass it whatever the policy.
        """
        self.check_history(obs_history)
        return self.action_normalizer.unnormalize(self(self.obs_normalizer.normalize(obs_history.float())))

    def check_history(self, obs_history: Tensor) -> None:
        """Raise a ValueError unless ``obs_history`` has shape (B, H, D)."""
        if obs_history.ndim != 3 or obs_history.shape[1:] != (self.history, self.obs_dim):
            raise ValueError(
                f"expected observation histories of shape (B, {self.history}, {self.obs_dim}), "
                f"got {tuple(obs_history.shape)}"
            )


def _rename_legacy_keys(module: Policy, state_dict: dict, prefix: str, *args) -> None:
    """Rename a state dict's old keys in place (``Policy.LEGACY_NAMES``) before it loads."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        name = key[len(prefix):]
        old = next((old for old in module.LEGACY_NAMES if name.startswith(old)), None)
        if old is not None:
            state_dict[prefix + module.LEGACY_NAMES[old] + name[len(old):]] = state_dict.pop(key)


def masked_mean(squared: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``squared`` (B, C) over the entries where ``mask`` (B, C) is True (padded chunk steps left out)."""
    mask = mask.to(squared.dtype)
    return (squared * mask).sum() / mask.sum().clamp(min=1.0)
