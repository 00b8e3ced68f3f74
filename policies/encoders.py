"""Image encoders: one per camera, uint8 (N, H, W, 3) in, a feature vector (N, F) out.

Images travel as uint8 (in memory, in batches, to the device) and become float here, per batch:
``x / 255 - 0.5``. Two backbones, chosen by the policy option ``encoder``:

- ``conv`` (default), sized for a CPU: four 3×3 convolutions of ``encoder_channels`` channels, the
  first with stride 2, no padding, ReLU (the DrQ / SAC-AE family's encoder), then a spatial-softmax
  readout: each channel's map becomes a softmax over positions and the expected (x, y) of it, a
  keypoint in [-1, 1]², so 2·C numbers whatever the image size (a flattened feature map would be a
  Linear input of tens of thousands, which no activation covariance should be built on).
  The softmax runs at ``softmax_temperature`` (default 0.1, i.e. the maps times 10): at temperature 1
  a fresh encoder's maps (values of order 0.1 over 25×25 = 625 positions at 64 px) give an almost
  uniform softmax, every keypoint sits near the image centre and moves little, and the encoder was
  slow to learn where things are. Measured (regressing Reach-v0's target position from 64 px frames,
  180 training / 20 held-out episodes, 600 steps, batch 64; docs/results/pixels.md): held-out error
  13.2 cm at step 200 and 6.2 cm at step 600 with temperature 1, 6.5 cm and 4.4 cm with 0.1.
- ``resnet18``: ResNet-18 with GroupNorm (C/16 groups) in place of BatchNorm, its average pool and
  classifier removed, and robomimic's readout: a 1×1 convolution to 32 keypoint maps, the spatial
  softmax (64 numbers). GroupNorm, because BatchNorm's running statistics would tie a policy's
  action to the other rows of its batch and differ between training and evaluation.

Both end in a Linear to ``encoder_features``. Augmentation (``shift``): in training mode each image
is padded by ``shift`` pixels (edge pixels repeated) and cropped back to its size at a random
offset, the same offset for every frame of one sample's history (DrQ's random shift); offsets come
from torch's global RNG, which training checkpoints. In eval mode there is no shift (the center
crop of the padded image is the image itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

ENCODER_NAMES = ("conv", "resnet18")


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Policy options for image inputs (used only when the data has images)."""

    encoder: str = "conv"  # image encoder per camera: conv (4 small conv layers, CPU-sized) | resnet18 (GroupNorm)
    encoder_channels: int = 32  # conv encoder: channels of each of its 4 layers (and keypoints of its readout)
    encoder_features: int = 64  # features per camera, concatenated with the low-dim observation
    shift: int = 4  # training augmentation: random shift by up to this many pixels (0: none); none at evaluation
    softmax_temperature: float = 0.1  # spatial-softmax readout: softmax(maps / this); 1 learnt to localise far slower

    def check_encoder(self) -> None:
        if self.encoder not in ENCODER_NAMES:
            raise ValueError(f"unknown encoder {self.encoder!r}; valid: {', '.join(ENCODER_NAMES)}")
        if (self.encoder_channels < 1 or self.encoder_features < 1 or self.shift < 0
                or not 0.0 < self.softmax_temperature < float("inf")):
            raise ValueError(f"invalid image encoder options in {self}: need encoder_channels >= 1, "
                             "encoder_features >= 1, shift >= 0, 0 < softmax_temperature < inf")


def spatial_softmax(maps: Tensor, temperature: float = 1.0) -> Tensor:
    """(N, C, h, w) -> (N, 2C): per channel, the expected (x, y) in [-1, 1] under a softmax over positions
    of ``maps / temperature``."""
    n, c, h, w = maps.shape
    weights = torch.softmax(maps.flatten(start_dim=2) / temperature, dim=-1).view(n, c, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
    return torch.cat([(weights.sum(dim=2) * xs).sum(dim=-1), (weights.sum(dim=3) * ys).sum(dim=-1)], dim=-1)


def random_shift(images: Tensor, shift: int, group: int = 1) -> Tensor:
    """Images (N, H, W, C) of any dtype padded by ``shift`` pixels (edges repeated) and cropped back at
    a random offset in [0, 2·shift]², one offset per run of ``group`` consecutive images (one
    sample's history). One gather with clamped indices (what edge padding amounts to), on uint8."""
    n, h, w = images.shape[:3]
    device = images.device
    offsets = torch.randint(0, 2 * shift + 1, (n // group, 2), device=device).repeat_interleave(group, dim=0) - shift
    rows = (offsets[:, :1] + torch.arange(h, device=device)).clamp_(0, h - 1)[:, :, None]  # (N, H, 1)
    cols = (offsets[:, 1:] + torch.arange(w, device=device)).clamp_(0, w - 1)[:, None, :]  # (N, 1, W)
    return images[torch.arange(n, device=device)[:, None, None], rows, cols]


class ImageEncoder(nn.Module):
    """uint8 (N, H, W, 3) -> float (N, features): scaling, augmentation, backbone, spatial softmax, Linear."""

    def __init__(self, backbone: nn.Module, keypoints: int, features: int, shift: int,
                 softmax_temperature: float = ImageEncoderConfig.softmax_temperature):
        super().__init__()
        self.backbone = backbone
        self.readout = nn.Linear(2 * keypoints, features)
        self.shift = shift
        self.softmax_temperature = softmax_temperature

    def forward(self, images: Tensor, group: int = 1) -> Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype}")
        if self.training and self.shift > 0:
            images = random_shift(images, self.shift, group)  # on uint8: a quarter of the bytes to move
        x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
        return self.readout(spatial_softmax(self.backbone(x), self.softmax_temperature))


def conv_backbone(channels: int) -> nn.Sequential:
    """Four 3×3 convolutions, the first with stride 2, no padding, ReLU: (N, 3, H, W) -> (N, C, h, w)."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(3 if i == 0 else channels, channels, 3, stride=2 if i == 0 else 1), nn.ReLU()]
    return nn.Sequential(*layers)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """ResNet's basic block with GroupNorm: relu(x' + GN(conv(relu(GN(conv(x)))))), x' = x or its 1×1 projection."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _group_norm(c_out)
        self.downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _group_norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(skip + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x))))))


def resnet18_backbone(keypoints: int = 32) -> nn.Sequential:
    """ResNet-18's convolutional part with GroupNorm (stem, 4 stages of 2 basic blocks, 64..512
    channels, stride 32 overall), then a 1×1 convolution to ``keypoints`` maps."""
    stages, c_in = [], 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    return nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), _group_norm(64), nn.ReLU(),
                         nn.MaxPool2d(3, stride=2, padding=1), *stages, nn.Conv2d(512, keypoints, 1))


def make_encoder(config: ImageEncoderConfig) -> ImageEncoder:
    """The configured encoder for one camera."""
    if config.encoder == "resnet18":
        return ImageEncoder(resnet18_backbone(32), 32, config.encoder_features, config.shift,
                            config.softmax_temperature)
    return ImageEncoder(conv_backbone(config.encoder_channels), config.encoder_channels,
                        config.encoder_features, config.shift, config.softmax_temperature)
