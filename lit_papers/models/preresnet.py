"""Pre-activation ResNets for CIFAR (He et al. 2016), the PreResNet family of Garipov et al. 2018.

Depth 6n+2 uses basic blocks (PreResNet-20/56/110), depth 9n+2 bottlenecks (PreResNet-164).
Three stages of `width`, 2*`width`, 4*`width` channels (16 in the paper; bottlenecks expand x4).
"""

from __future__ import annotations

from torch import nn

from .registry import MODELS


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != planes:
            self.shortcut = nn.Conv2d(cin, planes, 1, stride, bias=False)

    def forward(self, x):
        out = self.bn1(x).relu()
        # The projection shortcut takes the pre-activated input, as in the paper's PreResNet.
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.bn2(out).relu())
        return out + skip


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), nn.Conv2d(planes, cout, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = self.bn1(x).relu()
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.bn2(out).relu())
        out = self.conv3(self.bn3(out).relu())
        return out + skip


class PreResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        if (depth - 2) % 9 == 0 and depth >= 164:
            block, n = _Bottleneck, (depth - 2) // 9
        elif (depth - 2) % 6 == 0:
            block, n = _Basic, (depth - 2) // 6
        else:
            raise ValueError(f"PreResNet depth must be 6n+2 (basic blocks, e.g. 20, 56, 110) or 9n+2 >= 164 "
                             f"(bottlenecks), got {depth}")
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        layers, cin = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(block(cin, planes, stride=2 if stage > 0 and i == 0 else 1))
                cin = planes * block.expansion
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):  # x: (N, C, H, W) -> logits (N, num_classes)
        x = self.blocks(self.conv(x))  # (N, 4*width*expansion, H/4, W/4)
        x = self.bn(x).relu().mean(dim=(2, 3))  # global average pool -> (N, channels)
        return self.fc(x)


@MODELS.register("preresnet")
def preresnet(input_shape, num_classes, depth: int = 20, width: int = 16) -> PreResNet:
    """PreResNet of any valid depth (6n+2 basic, 9n+2 bottleneck)."""
    return PreResNet(depth, input_shape[0], num_classes, width=width)


def _fixed_depth(depth: int):
    def build(input_shape, num_classes, width: int = 16) -> PreResNet:
        return PreResNet(depth, input_shape[0], num_classes, width=width)

    build.__doc__ = f"PreResNet-{depth} for CIFAR."
    return build


for _depth in (20, 56, 110, 164):
    MODELS.register(f"preresnet{_depth}")(_fixed_depth(_depth))
