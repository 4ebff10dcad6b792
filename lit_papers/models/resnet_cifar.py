"""CIFAR ResNets of He et al. (2016), Section 4.2: ResNet-(6n+2) with widths 16/32/64.

ResNet-20 (n = 3, ~272K parameters) is the net Frankle & Carbin (2019) call "Resnet-18".
Downsampling shortcuts are 1x1 convolutions + BatchNorm (projection, option B), as in the
lottery-ticket reference implementations.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lit_papers.models.registry import MODELS


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus (projected) identity, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2): stem conv 16, three stages of n blocks (16, 32, 64), global pool, FC."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 20,
                 width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C, 32, 32) -> (N, 64, 8, 8) -> pooled (N, 64) -> logits (N, num_classes)
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@MODELS.register("resnet20")
def resnet20(input_shape, num_classes, **kwargs) -> nn.Module:
    """ResNet-20 for CIFAR (the lottery-ticket paper's "Resnet-18")."""
    return ResNetCifar(tuple(input_shape), num_classes, depth=kwargs.pop("depth", 20), **kwargs)
