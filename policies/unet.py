"""A 1D temporal U-Net over the action chunk, conditioned by FiLM: the velocity network of ``flow-unet``.

The architecture follows Diffusion Policy's conditional U-Net (Chi et al., RSS 2023): the chunk is a
sequence of C steps with A channels; residual blocks of two Conv1d -> GroupNorm -> activation layers, each
block's hidden state scaled and shifted per channel by the condition (FiLM), a stride-2 Conv1d halving
the sequence after every level but the last, a ConvTranspose1d doubling it again on the way up, where
the level's skip connection is concatenated. Widths double per level: ``width``, 2·``width``, ...
(The activation is an option, GELU by default as in the paper's U-Net, or Mish: :data:`ACTIVATIONS`.)

    down level i:  Res(c_{i-1} -> c_i), Res(c_i -> c_i), [skip_i; Conv1d stride 2]   (not after the last)
    middle:        Res(c_L -> c_L) twice
    up level i:    ConvTranspose1d (x2 length), cat skip_i, Res(c_{i+1} + c_i -> c_i), Res(c_i -> c_i)
    out:           Conv1d -> GroupNorm -> activation, Conv1d 1x1 to A channels

So a chunk of C steps passes levels - 1 halvings: C must be a multiple of 2**(levels - 1)
(:func:`check_unet_chunk`; ``train`` calls it before loading any data). Sizes:
``width`` 32, ``levels`` 2 (widths 32, 64), ``kernel`` 5, ``groups`` 8 by default, CPU-sized; the
published size (~20M parameters with image features) is width 128, levels 3 (128, 256, 512).

FiLM from ONE Linear: every block reads the same condition vector (observation features and time
embedding), so all their scales and shifts come from one ``nn.Linear(cond, Σ 2·c_block)`` whose output
is split per block. A layer's input covariance is what DoPr's activation preconditioning whitens;
one Linear over the shared input keeps one covariance for all blocks instead of one copy per block
(as the fused qkv projection of ``policies/transformer.py`` does). GroupNorm's affine parameters are
neither Linear nor Conv: they go to DoPr's base optimizer on the raw gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# The blocks' nonlinearity: GELU as in the paper's U-Net (the "chiunet" of the authors' flow-policy code),
# Mish as in Diffusion Policy's. Measured on this project's CPU, Mish's forward and backward cost 5x
# GELU's on a (256, 64, 16) activation, and the CPU-default flow-unet's training step ~20% more.
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "mish": nn.Mish}


def check_unet_options(width: int, levels: int, kernel: int, groups: int, activation: str = "gelu") -> None:
    """Raise a ValueError naming the bad value unless the U-Net's sizes can be built."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown unet_activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if width < 1 or levels < 1 or groups < 1:
        raise ValueError(f"invalid U-Net head: need unet_width >= 1, unet_levels >= 1, unet_groups >= 1, got "
                         f"unet_width={width}, unet_levels={levels}, unet_groups={groups}")
    if width % groups:
        raise ValueError(f"invalid U-Net head: unet_groups {groups} must divide unet_width {width}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"invalid U-Net head: unet_kernel must be odd and >= 1 (same-length convolutions), got {kernel}")


def check_unet_chunk(chunk: int, levels: int) -> None:
    """Raise a ValueError unless a U-Net of ``levels`` levels can halve a chunk of ``chunk`` steps."""
    multiple = 2 ** (levels - 1)
    if chunk % multiple:
        examples = ", ".join(str(multiple * k) for k in (1, 2, 4) if multiple * k > 1)
        raise ValueError(f"chunk {chunk} cannot pass a U-Net of unet_levels={levels}: it halves the chunk "
                         f"{levels - 1} time(s), so the chunk must be a multiple of {multiple} (e.g. {examples})")


class ConvBlock(nn.Sequential):
    """Conv1d (same length) -> GroupNorm -> activation: (B, c_in, L) -> (B, c_out, L)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int, activation: str):
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out),
                         ACTIVATIONS[activation]())


class ResidualBlock(nn.Module):
    """x' + ConvBlock(FiLM(ConvBlock(x))), x' = x or its 1x1 projection: (B, c_in, L) -> (B, c_out, L).
    FiLM: h · (1 + scale) + shift per channel; scale and shift (B, c_out) come from the U-Net's one Linear."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int, activation: str):
        super().__init__()
        self.channels = c_out
        self.conv1 = ConvBlock(c_in, c_out, kernel, groups, activation)
        self.conv2 = ConvBlock(c_out, c_out, kernel, groups, activation)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, film: Tensor) -> Tensor:
        scale, shift = film.unsqueeze(-1).chunk(2, dim=1)
        return self.skip(x) + self.conv2(self.conv1(x) * (1.0 + scale) + shift)


class TemporalUNet(nn.Module):
    """(B, C, A) chunk and (B, cond_dim) condition -> (B, C, A); see the module docstring."""

    def __init__(self, act_dim: int, cond_dim: int, width: int = 32, levels: int = 2, kernel: int = 5, groups: int = 8,
                 activation: str = "gelu"):
        super().__init__()
        check_unet_options(width, levels, kernel, groups, activation)
        k, g, a = kernel, groups, activation
        widths = [width * 2 ** i for i in range(levels)]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_in = act_dim
        for i, c in enumerate(widths):
            self.down.append(nn.ModuleList([ResidualBlock(c_in, c, k, g, a), ResidualBlock(c, c, k, g, a)]))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv1d(c, c, 3, stride=2, padding=1))
            c_in = c
        self.middle = nn.ModuleList([ResidualBlock(c_in, c_in, k, g, a), ResidualBlock(c_in, c_in, k, g, a)])
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in reversed(range(len(widths) - 1)):
            self.upsample.append(nn.ConvTranspose1d(widths[i + 1], widths[i + 1], 4, stride=2, padding=1))
            self.up.append(nn.ModuleList([ResidualBlock(widths[i + 1] + widths[i], widths[i], k, g, a),
                                          ResidualBlock(widths[i], widths[i], k, g, a)]))
        self.out = nn.Sequential(ConvBlock(widths[0], widths[0], k, g, a), nn.Conv1d(widths[0], act_dim, 1))
        self.blocks = [block for level in (*self.down, self.middle, *self.up) for block in level]
        # One Linear for every block's (scale, shift): the blocks share its input (module docstring).
        self.film = nn.Linear(cond_dim, sum(2 * block.channels for block in self.blocks))
        self.activation = ACTIVATIONS[activation]()  # before the FiLM Linear, as in the blocks
        self.halvings = len(widths) - 1

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        if x.shape[1] % 2 ** self.halvings:
            check_unet_chunk(x.shape[1], self.halvings + 1)
        films = iter(self.film(self.activation(condition)).split([2 * b.channels for b in self.blocks], dim=-1))
        h, skips = x.transpose(1, 2), []  # (B, A, C): channels first, the chunk is the sequence axis
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, next(films))
            if i < self.halvings:
                skips.append(h)
                h = self.downsample[i](h)
        for block in self.middle:
            h = block(h, next(films))
        for upsample, level in zip(self.upsample, self.up):
            h = torch.cat([upsample(h), skips.pop()], dim=1)
            for block in level:
                h = block(h, next(films))
        return self.out(h).transpose(1, 2)
