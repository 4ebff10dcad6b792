"""Fully connected nets: the generic MLP and LeNet-300-100 (Frankle & Carbin's MNIST net)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from .registry import MODELS


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU (-> Dropout)] * len(hidden) -> Linear."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, dropout: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):  # x: (N, C, H, W) or (N, D)
        return self.layers(x)


@MODELS.register("mlp")
def mlp(input_shape, num_classes, hidden: Sequence[int] = (512,), dropout: float = 0.0,
        batch_norm: bool = False) -> MLP:
    return MLP(math.prod(input_shape), list(hidden), num_classes, dropout, batch_norm)


@MODELS.register("lenet300_100")
def lenet300_100(input_shape, num_classes, dropout: float = 0.0) -> MLP:
    return MLP(math.prod(input_shape), [300, 100], num_classes, dropout)
