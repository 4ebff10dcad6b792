"""`WeightTiedNet`: the explicit network a DEQ replaces, registered as model `weight_tied`.

The same cell applied `depth` times from z0, with backprop through every application: the
weight-tied stack of that depth, built from the same stem, cell and head as `DEQNet`.
"""

from __future__ import annotations

from torch import Tensor, nn

from lit_papers.models.registry import MODELS

from .parts import build_parts


class WeightTiedNet(nn.Module):
    """stem -> the same cell applied `depth` times from z0 -> head (explicit, backprop through all)."""

    def __init__(self, input_shape, num_classes, cell: str = "conv", width: int = 32, depth: int = 8,
                 downsample: int = 1, pool: int = 1, **cell_kwargs):
        super().__init__()
        self.depth = depth
        self.stem, self.cell, self.head = build_parts(cell, tuple(input_shape), num_classes, width, downsample,
                                                      pool, **cell_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        injection = self.stem(x)
        z = self.cell.init_state(injection)
        for _ in range(self.depth):
            z = self.cell(z, injection)
        return self.head(z)


@MODELS.register("weight_tied")
def weight_tied(input_shape, num_classes, **kwargs) -> WeightTiedNet:
    return WeightTiedNet(tuple(input_shape), num_classes, **kwargs)
