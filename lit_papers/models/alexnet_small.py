"""AlexNet-small: the small CIFAR-10 AlexNet of Zhang et al. (2017), appendix A.

Two [conv5x5(64) -> ReLU -> maxpool3x3/2 -> LRN] blocks, then FC384 -> FC192 -> FC10. With
'same' padding everywhere a 28x28x3 input gives 1,387,786 parameters, the paper's count.
"""

from __future__ import annotations

from torch import nn

from .registry import MODELS


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # LRN as in the TF CIFAR-10 tutorial (depth_radius 4, bias 1, alpha 0.001/9, beta 0.75);
    # torch divides alpha by `size`, so alpha=0.001 here equals TF's 0.001/9 per element.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # 'same' pooling: 28 -> 14 -> 7
        nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0),
    )


def _pooled_size(size: int) -> int:
    """Spatial size after one conv block (the conv keeps it, the 3x3/2 pool with pad 1 halves it)."""
    return (size + 2 - 3) // 2 + 1


class AlexNetSmall(nn.Module):
    """Zhang et al.'s AlexNet-small; `dropout` (the explicit regulariser) sits before FC384 and FC192."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        channels, height, width_px = input_shape
        self.features = nn.Sequential(_conv_block(channels, width), _conv_block(width, width))
        h, w = _pooled_size(_pooled_size(height)), _pooled_size(_pooled_size(width_px))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(width * h * w, 384),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(384, 192),
            nn.ReLU(),
            nn.Linear(192, num_classes),
        )

    def forward(self, x):  # x: (N, C, H, W) -> logits (N, num_classes)
        return self.classifier(self.features(x))


@MODELS.register("alexnet_small")
def alexnet_small(input_shape, num_classes, width: int = 64, dropout: float = 0.0) -> AlexNetSmall:
    if len(input_shape) != 3:
        raise ValueError(f"alexnet_small needs image inputs (C, H, W), got shape {input_shape}")
    return AlexNetSmall(tuple(input_shape), num_classes, width, dropout)
