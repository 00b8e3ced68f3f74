"""What every policy shares: normalizers inside the module, image encoders, the BC loss, one inference call."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from policies.encoders import ImageEncoderConfig, make_encoder
from policies.normalizer import Normalizer

# Where sampling policies draw noise: one generator for the batch, one per row, or None (torch's global RNG).
Generators = Union[torch.Generator, Sequence[Union[torch.Generator, None]], None]


class Policy(nn.Module):
    """Maps a history of observations to a chunk of future actions.

    Subclasses implement ``forward(obs, images=None)`` on *normalized* observations, (B, H, D) ->
    (B, C, A) normalized actions. Shapes: B batch, H = ``history``, D = ``obs_dim``, C = ``chunk``,
    A = ``act_dim``. Policies that sample (:mod:`policies.flow`) override ``loss``, ``predict`` and
    ``validation_metrics`` instead, and their ``forward`` is the network call their loss makes.

    Images: ``image_shapes`` {key: (h, w, 3)} gives the policy one encoder per camera
    (:mod:`policies.encoders`, built from the config's encoder options); images arrive as uint8
    {key: (B, H, h, w, 3)} beside the low-dim history, and :meth:`encode` turns both into one
    vector per history step, (B, H, ``step_dim``): the normalized low-dim observation, then each
    camera's features in sorted key order. The trunks take that. Without images ``step_dim`` is
    ``obs_dim`` and the policy is exactly the state policy (no encoder modules, same parameters).
    """

    # Old parameter-name prefix -> new, for state dicts saved before a module was renamed.
    LEGACY_NAMES: dict[str, str] = {}

    def __init__(self, obs_dim: int, act_dim: int, history: int, chunk: int,
                 image_shapes: Mapping[str, Sequence[int]] | None = None, config: object = None):
        super().__init__()
        self.obs_dim, self.act_dim, self.history, self.chunk = obs_dim, act_dim, history, chunk
        self.obs_normalizer = Normalizer(obs_dim)
        self.action_normalizer = Normalizer(act_dim)
        self.image_shapes = check_image_shapes(image_shapes)
        self.step_dim = obs_dim
        if self.image_shapes:
            encoder_config = config if isinstance(config, ImageEncoderConfig) else ImageEncoderConfig()
            self.image_encoders = nn.ModuleDict({key: make_encoder(encoder_config) for key in self.image_shapes})
            self.step_dim += len(self.image_shapes) * encoder_config.encoder_features
        if self.LEGACY_NAMES:
            self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    def encode(self, obs: Tensor, images: Mapping[str, Tensor] | None = None) -> Tensor:
        """Normalized low-dim histories (B, H, D) and uint8 images {key: (B, H, h, w, 3)} -> (B, H, step_dim);
        ``obs`` itself for a policy without images. The images become float inside each encoder."""
        if not self.image_shapes:
            return obs
        self.check_images(images, len(obs))
        batch = len(obs)
        features = [self.image_encoders[key](images[key].flatten(end_dim=1), group=self.history)
                    .view(batch, self.history, -1) for key in self.image_shapes]
        return torch.cat([obs, *features], dim=-1)

    def image_inputs(self, batch: Mapping[str, object]) -> dict[str, object]:
        """The keyword arguments that carry a batch's images to ``forward``: none for a state policy."""
        return {"images": batch.get("images")} if self.image_shapes else {}

    def check_images(self, images: Mapping[str, Tensor] | None, batch: int) -> None:
        """Raise a ValueError unless ``images`` holds a uint8 (B, H, h, w, 3) tensor per camera of the policy."""
        if not isinstance(images, Mapping) or set(images) != set(self.image_shapes):
            got = "no images" if not isinstance(images, Mapping) else f"images {sorted(images)}"
            raise ValueError(f"this policy takes images {list(self.image_shapes)}, got {got}")
        for key, (h, w, c) in self.image_shapes.items():
            image = images[key]
            if image.dtype != torch.uint8 or tuple(image.shape) != (batch, self.history, h, w, c):
                raise ValueError(f"images {key!r}: expected uint8 of shape ({batch}, {self.history}, {h}, {w}, {c}), "
                                 f"got {image.dtype} {tuple(image.shape)}")

    def loss(self, batch: dict[str, Tensor], forward: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """Mean squared error in normalized action units over the valid (unpadded) chunk steps.

        ``batch``: "obs" (B, H, D), "actions" (B, C, A), "action_mask" (B, C) bool, and for a policy
        with cameras "images" {key: uint8 (B, H, h, w, 3)}. ``forward``
        replaces ``self`` for the network call, e.g. a DistributedDataParallel wrapper of it.
        """
        predicted = (forward or self)(self.obs_normalizer.normalize(batch["obs"]), **self.image_inputs(batch))
        target = self.action_normalizer.normalize(batch["actions"])
        return masked_mean((predicted - target).pow(2).mean(dim=-1), batch["action_mask"])

    @torch.no_grad()
    def validation_metrics(self, batch: dict[str, Tensor], generator: Generators = None) -> dict[str, Tensor]:
        """Held-out numbers for one batch, as 0-d tensors: ``val_loss``, the BC loss. Policies that
        sample (:mod:`policies.flow`) draw their noise from ``generator`` and report more keys."""
        return {"val_loss": self.loss(batch)}

    @torch.no_grad()
    def predict(self, obs_history: Tensor, generator: Generators = None,
                images: Mapping[str, Tensor] | None = None) -> Tensor:
        """Actions in environment units for a batch of observation histories.

        ``obs_history`` (B, H, D) raw observations, oldest first -> (B, C, A): the predicted chunk,
        its first row the action to take now. ``images``: {key: uint8 (B, H, h, w, 3)} for a policy
        with cameras (ignored otherwise). ``generator``: where a sampling policy draws its noise
        (one ``torch.Generator`` for the batch, or a sequence of B, one per row; None: torch's global
        RNG); a deterministic policy ignores it, so callers pass it whatever the policy.
        """
        self.check_history(obs_history)
        obs = self.obs_normalizer.normalize(obs_history.float())
        return self.action_normalizer.unnormalize(self(obs, **self.image_inputs({"images": images})))

    def check_history(self, obs_history: Tensor) -> None:
        """Raise a ValueError unless ``obs_history`` has shape (B, H, D)."""
        if obs_history.ndim != 3 or obs_history.shape[1:] != (self.history, self.obs_dim):
            raise ValueError(
                f"expected observation histories of shape (B, {self.history}, {self.obs_dim}), "
                f"got {tuple(obs_history.shape)}"
            )


def check_image_shapes(image_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, int, int]]:
    """{key: (h, w, 3)} in sorted key order (the order of the features), checked; {} for None."""
    checked = {}
    for key in sorted(image_shapes or {}):
        shape = tuple(int(n) for n in image_shapes[key])
        if len(shape) != 3 or shape[2] != 3 or min(shape) < 1 or "." in key:
            raise ValueError(f"image {key!r}: expected a key without '.' and a shape (h, w, 3), got {shape}")
        if min(shape[:2]) < 15:  # the conv encoder's four unpadded layers need 15 pixels
            raise ValueError(f"image {key!r} of {shape[0]}x{shape[1]} pixels is too small: the encoders need >= 15")
        checked[key] = shape
    return checked


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
