"""`WeightTiedNet`: the explicit network a DEQ replaces, registered as model `weight_tied`.

The same cell applied `depth` times from z0, with backprop through every application: the
weight-tied stack of that depth, built from the same stem, cell and head as `DEQNet`, so the two
have the same parameters. `tied=False` gives the untied explicit net of the same depth: `depth`
independent cells of the same kind (stem and head as before), `depth` times the cell's parameters.
"""

from __future__ import annotations

from torch import Tensor, nn

from lit_papers.models.registry import MODELS

from .cells import build_cell
from .parts import build_parts


class WeightTiedNet(nn.Module):
    """stem -> cell_k(z, injection) for k = 1..depth from z0 -> head (explicit, backprop through all).

    With `tied` (the default) every cell_k is the one cell; otherwise each layer has its own.
    """

    def __init__(self, input_shape, num_classes, cell: str = "conv", width: int = 32, depth: int = 8,
                 downsample: int = 1, pool: int = 1, tied: bool = True, **cell_kwargs):
        super().__init__()
        if depth < 1:
            raise ValueError(f"an explicit net needs depth >= 1 cell applications, got {depth}")
        if not tied and cell == "multiscale":
            raise ValueError("tied=false is not available for the multiscale cell (its layout is shared by "
                             "stem, cell and head); use cell=conv or mlp")
        self.depth, self.tied = depth, tied
        self.stem, self.cell, self.head = build_parts(cell, tuple(input_shape), num_classes, width, downsample,
                                                      pool, **cell_kwargs)
        # Layers 2..depth of the untied net: fresh cells of the same kind and size.
        self.more_cells = nn.ModuleList(
            [] if tied else [build_cell(cell, width, **cell_kwargs) for _ in range(depth - 1)])

    def layer(self, k: int) -> nn.Module:
        """The cell applied at step k (0-based)."""
        return self.cell if self.tied or k == 0 else self.more_cells[k - 1]

    def forward(self, x: Tensor) -> Tensor:
        injection = self.stem(x)
        z = self.cell.init_state(injection)
        for k in range(self.depth):
            z = self.layer(k)(z, injection)
        return self.head(z)


@MODELS.register("weight_tied")
def weight_tied(input_shape, num_classes, **kwargs) -> WeightTiedNet:
    return WeightTiedNet(tuple(input_shape), num_classes, **kwargs)
