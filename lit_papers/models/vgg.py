"""VGG16/VGG19 for small images (the CIFAR variant used by Garipov et al. 2018), with or without BN.

Five conv stages with max pooling, then a 3-layer classifier with dropout. `width` is the
channel count of the first stage (64 in the paper); later stages scale with it (x2, x4, x8, x8).
Pooling uses ceil mode so inputs smaller than 32x32 (e.g. 28x28 MNIST) still reach 1x1.
"""

from __future__ import annotations

from torch import nn

from .registry import MODELS

# Conv channels per stage as multiples of `width`; "M" is a 2x2 max pool.
_DEPTHS = {
    16: [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
    19: [1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"],
}


class VGG(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 64,
                 batch_norm: bool = False, dropout: float = 0.5):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"VGG depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if width < 1:
            raise ValueError(f"width must be a positive channel count, got {width}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _DEPTHS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            out = item * width
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(channels, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):  # x: (N, C, H, W) -> logits (N, num_classes)
        x = self.features(x)  # (N, 8*width, 1, 1) for H, W <= 32
        if x.shape[-1] != 1 or x.shape[-2] != 1:
            x = nn.functional.adaptive_max_pool2d(x, 1)  # larger inputs: pool to one position
        return self.classifier(x)


def _factory(depth: int, batch_norm: bool):
    def build(input_shape, num_classes, width: int = 64, dropout: float = 0.5) -> VGG:
        return VGG(depth, input_shape[0], num_classes, width=width, batch_norm=batch_norm, dropout=dropout)

    build.__doc__ = f"VGG{depth}{' with BatchNorm' if batch_norm else ''} for small images."
    return build


for _depth in (16, 19):
    MODELS.register(f"vgg{_depth}")(_factory(_depth, batch_norm=False))
    MODELS.register(f"vgg{_depth}_bn")(_factory(_depth, batch_norm=True))
