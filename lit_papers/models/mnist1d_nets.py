"""The MNIST-1D paper's baselines (Greydanus & Kobak 2024) for 1D signals of shape (C, L) = (1, 40).

- `mnist1d_mlp`: 40 -> 100 -> 100 -> 10 with ReLU; the second hidden layer is residual,
  h2 = h1 + relu(W2 h1), as in the paper's code (`residual: false` gives a plain MLP).
- `mnist1d_cnn`: three Conv1d layers of 25 channels (kernel 5, then 3 and 3; stride 2, padding 1;
  ReLU), flattened into one linear classifier: 40 -> 19 -> 10 -> 5 positions, 125 features.

`batch_norm: true` puts a BatchNorm after every hidden linear/conv layer, before its ReLU
(conv biases are then dropped: BN's shift replaces them).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from .registry import MODELS


def _signal_shape(input_shape, name: str) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ValueError(f"{name} takes 1D signals of shape (C, L), e.g. --data.dataset=mnist1d; "
                         f"got input shape {tuple(input_shape)}")
    return int(input_shape[0]), int(input_shape[1])


class MNIST1DMLP(nn.Module):
    """Flatten -> Linear-(BN)-ReLU -> [h + ] Linear-(BN)-ReLU -> Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 100, residual: bool = True,
                 batch_norm: bool = False):
        super().__init__()
        self.residual = residual

        def block(width_in):
            return nn.Sequential(nn.Linear(width_in, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []),
                                 nn.ReLU())

        self.flatten = nn.Flatten()
        self.block1, self.block2 = block(in_features), block(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, L) -> logits (N, classes)
        h = self.block1(self.flatten(x))  # (N, hidden)
        h = h + self.block2(h) if self.residual else self.block2(h)
        return self.head(h)


def conv1d_output_length(length: int, kernel: int, stride: int, padding: int) -> int:
    """Positions left by a Conv1d (dilation 1)."""
    return (length + 2 * padding - kernel) // stride + 1


#: (kernel, stride, padding) of the paper's three conv layers
CNN_LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


class MNIST1DCNN(nn.Module):
    """[Conv1d-(BN)-ReLU] x 3 (stride 2 each) -> flatten -> Linear."""

    def __init__(self, channels_in: int, length: int, num_classes: int, channels: int = 25,
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = channels_in
        for kernel, stride, padding in CNN_LAYERS:
            layers += [nn.Conv1d(width, channels, kernel, stride=stride, padding=padding, bias=not batch_norm),
                       *([nn.BatchNorm1d(channels)] if batch_norm else []), nn.ReLU()]
            width, length = channels, conv1d_output_length(length, kernel, stride, padding)
        if length < 1:
            raise ValueError(f"mnist1d_cnn: signals are too short for three stride-2 convolutions ({length})")
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, L) -> features (N, channels, L/8) -> logits
        return self.head(self.features(x).flatten(1))


@MODELS.register("mnist1d_mlp")
def mnist1d_mlp(input_shape, num_classes, hidden: int = 100, residual: bool = True,
                batch_norm: bool = False) -> MNIST1DMLP:
    """The MNIST-1D paper's MLP (two hidden layers of `hidden` units, the second residual)."""
    _signal_shape(input_shape, "mnist1d_mlp")
    return MNIST1DMLP(math.prod(input_shape), num_classes, hidden, residual, batch_norm)


@MODELS.register("mnist1d_cnn")
def mnist1d_cnn(input_shape, num_classes, channels: int = 25, batch_norm: bool = False) -> MNIST1DCNN:
    """The MNIST-1D paper's 1D CNN (three stride-2 conv layers of `channels`, one linear layer)."""
    c, length = _signal_shape(input_shape, "mnist1d_cnn")
    return MNIST1DCNN(c, length, num_classes, channels, batch_norm)
