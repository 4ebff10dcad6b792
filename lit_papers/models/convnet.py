"""A small conv net: a cheap CNN baseline for 8x8 to 32x32 images."""

from __future__ import annotations

from torch import nn

from .registry import MODELS


@MODELS.register("convnet")
def convnet(input_shape, num_classes, width: int = 32, batch_norm: bool = True) -> nn.Sequential:
    """Two conv-(BN)-ReLU-maxpool stages, then global average pooling and a linear head."""
    c, _, _ = input_shape

    def stage(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm),
                *([nn.BatchNorm2d(cout)] if batch_norm else []), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *stage(c, width), *stage(width, 2 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )
