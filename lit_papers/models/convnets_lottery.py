"""Conv-2 / Conv-4 / Conv-6: the VGG-style CIFAR-10 nets of Frankle & Carbin (2019), Figure 2.

Each "block" is two 3x3 convolutions (same padding, ReLU) followed by 2x2 max-pooling; the
classifier is FC 256 -> 256 -> num_classes. Widths double per block: 64, 128, 256.

| net    | conv blocks           | params (CIFAR-10) |
| ------ | --------------------- | ----------------- |
| Conv-2 | 64,64,pool            | 4.3M              |
| Conv-4 | +128,128,pool         | 2.4M              |
| Conv-6 | +256,256,pool         | 2.3M (table: 1.7M)|

Weights use Glorot (Xavier) normal initialisation and zero biases, as in the paper.
"""

from __future__ import annotations

from torch import Tensor, nn

from lit_papers.models.registry import MODELS

CONV_WIDTHS = {2: (64,), 4: (64, 128), 6: (64, 128, 256)}


def glorot_normal_(module: nn.Module) -> None:
    """Glorot-normal weights and zero biases for every Linear/Conv layer of ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class ConvNetLottery(nn.Module):
    """Conv-``depth`` network: ``depth // 2`` conv blocks, then FC 256, 256, out."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 2,
                 fc: tuple[int, ...] = (256, 256)):
        super().__init__()
        if depth not in CONV_WIDTHS:
            raise ValueError(f"Conv-{depth} does not exist; choose depth from {sorted(CONV_WIDTHS)}")
        if len(input_shape) != 3:
            raise ValueError(f"Conv-{depth} needs image inputs (C, H, W), got shape {input_shape}")
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out in CONV_WIDTHS[depth]:
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, width = out, height // 2, width // 2
        self.features = nn.Sequential(*layers)
        dims = [channels * height * width, *fc]
        head: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            head += [nn.Linear(d_in, d_out), nn.ReLU()]
        head.append(nn.Linear(dims[-1], num_classes))  # output layer: pruned at half rate
        self.classifier = nn.Sequential(*head)
        glorot_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C, H, W) -> features (N, C', H/2^b, W/2^b) -> logits (N, num_classes)
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("conv2")
def conv2(input_shape, num_classes, **kwargs) -> nn.Module:
    """Conv-2 of Frankle & Carbin (2019)."""
    return ConvNetLottery(tuple(input_shape), num_classes, depth=2, **kwargs)


@MODELS.register("conv4")
def conv4(input_shape, num_classes, **kwargs) -> nn.Module:
    """Conv-4 of Frankle & Carbin (2019)."""
    return ConvNetLottery(tuple(input_shape), num_classes, depth=4, **kwargs)


@MODELS.register("conv6")
def conv6(input_shape, num_classes, **kwargs) -> nn.Module:
    """Conv-6 of Frankle & Carbin (2019)."""
    return ConvNetLottery(tuple(input_shape), num_classes, depth=6, **kwargs)
