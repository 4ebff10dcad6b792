"""Inception-small: the small CIFAR-10 Inception of Zhang et al. (2017), appendix A.

conv3x3(96) -> Inc(32,32) -> Inc(32,48) -> Down(80) -> Inc(112,48) -> Inc(96,64) -> Inc(80,80)
-> Inc(48,96) -> Down(96) -> Inc(176,160) x2 -> global mean pool -> FC10, where
Conv = conv + BN + ReLU, Inc(a,b) = 1x1(a) || 3x3(b), Down(c) = stride-2 3x3(c) || stride-2 maxpool.

The count 1,649,402 (28x28x3 inputs) holds with and without BatchNorm: with BN each conv has no
bias and the BN learns only a shift (TF's `scale=False` default, since a ReLU follows); without
BN each conv has its own bias. Either way one bias per output channel.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import MODELS


class ConvUnit(nn.Module):
    """conv -> (BN with a learned shift only | conv bias) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 batch_norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=not batch_norm)
        # affine=False: no scale (the ReLU after it makes a scale redundant up to the next layer)
        self.bn = nn.BatchNorm2d(out_channels, affine=False) if batch_norm else None
        self.shift = nn.Parameter(torch.zeros(out_channels)) if batch_norm else None

    def forward(self, x):  # (N, C_in, H, W) -> (N, C_out, H', W')
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x) + self.shift[:, None, None]
        return torch.relu(x)


class InceptionBlock(nn.Module):
    """Inc(a, b): a 1x1 branch with `a` channels concatenated with a 3x3 branch with `b` channels."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, batch_norm: bool):
        super().__init__()
        self.branch1 = ConvUnit(in_channels, ch1x1, 1, batch_norm=batch_norm)
        self.branch3 = ConvUnit(in_channels, ch3x3, 3, batch_norm=batch_norm)
        self.out_channels = ch1x1 + ch3x3

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch3(x)], dim=1)


class DownsampleBlock(nn.Module):
    """Down(c): stride-2 3x3 conv with `c` channels concatenated with a stride-2 3x3 max pool."""

    def __init__(self, in_channels: int, channels: int, batch_norm: bool):
        super().__init__()
        self.conv = ConvUnit(in_channels, channels, 3, stride=2, batch_norm=batch_norm)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # same output size as the conv
        self.out_channels = channels + in_channels

    def forward(self, x):
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


# ("inc", a, b) or ("down", c), in the order of the paper's Figure 3
INCEPTION_SMALL_LAYOUT = (
    ("inc", 32, 32), ("inc", 32, 48), ("down", 80),
    ("inc", 112, 48), ("inc", 96, 64), ("inc", 80, 80), ("inc", 48, 96), ("down", 96),
    ("inc", 176, 160), ("inc", 176, 160),
)


class InceptionSmall(nn.Module):
    """Zhang et al.'s Inception-small; `batch_norm` is the implicit-regulariser switch of Table 1."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [ConvUnit(in_channels, 96, 3, batch_norm=batch_norm)]
        channels = 96
        for spec in INCEPTION_SMALL_LAYOUT:
            if spec[0] == "inc":
                block = InceptionBlock(channels, spec[1], spec[2], batch_norm)
            else:
                block = DownsampleBlock(channels, spec[1], batch_norm)
            layers.append(block)
            channels = block.out_channels
        self.features = nn.Sequential(*layers)
        # the paper's 7x7 mean pool is a global pool at 28x28 inputs (28 -> 14 -> 7)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, num_classes))

    def forward(self, x):  # x: (N, C, H, W) -> logits (N, num_classes)
        return self.head(self.features(x))


@MODELS.register("inception_small")
def inception_small(input_shape, num_classes, batch_norm: bool = True,
                    dropout: float = 0.0) -> InceptionSmall:
    if len(input_shape) != 3:
        raise ValueError(f"inception_small needs image inputs (C, H, W), got shape {input_shape}")
    return InceptionSmall(input_shape[0], num_classes, batch_norm, dropout)
