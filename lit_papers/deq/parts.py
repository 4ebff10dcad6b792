"""Stems and heads around a DEQ cell: (stem, cell, head) of an image classifier.

The stem maps the input to the injection once, outside the solve; the head reads logits off the
equilibrium state. `DEQNet` (`network.py`) and the explicit `WeightTiedNet` (`weight_tied.py`)
are built from the same parts.
"""

from __future__ import annotations

import math

from torch import nn

from .cells import DEQ_CELLS, build_cell
from .multiscale import MultiscaleHead, MultiscaleLayout, MultiscaleStem


def build_stem(cell: str, input_shape: tuple[int, ...], width: int, downsample: int = 1,
               groups: int = 8) -> nn.Module:
    """Input -> injection. conv: 3x3 conv + GN, then `downsample` stride-2 conv stages; mlp: Linear."""
    if cell == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width))
    if cell != "conv":
        raise ValueError(f"no image stem for deq cell {cell!r}; image cells: conv, mlp "
                         f"(all deq cells: {', '.join(DEQ_CELLS.names())})")
    norm = lambda: nn.GroupNorm(math.gcd(groups, width), width)
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False), norm()]
    for _ in range(downsample):
        layers += [nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), norm()]
    return nn.Sequential(*layers)


def build_head(cell: str, width: int, num_classes: int, pool: int = 1) -> nn.Module:
    """Equilibrium state -> logits: average-pool to pool x pool (conv) and a linear classifier."""
    if cell == "mlp":
        return nn.Linear(width, num_classes)
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(width * pool * pool, num_classes))


def build_parts(cell: str, input_shape: tuple[int, ...], num_classes: int, width: int, downsample: int = 1,
                pool: int = 1, **cell_kwargs) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(stem, cell, head) of an image classifier around cell `cell`.

    `multiscale` (MDEQ, `multiscale.py`) takes `branches` (default 2) among its cell kwargs:
    its stem adds a downsampled injection per branch, its state packs the branches.
    """
    groups = cell_kwargs.get("groups", 8)
    if cell != "multiscale":
        if "branches" in cell_kwargs:
            raise ValueError(f"branches applies to the multiscale cell only, not to cell {cell!r}")
        return (build_stem(cell, input_shape, width, downsample, groups), build_cell(cell, width, **cell_kwargs),
                build_head(cell, width, num_classes, pool))
    branches = cell_kwargs.pop("branches", None) or 2
    size = tuple(input_shape[1:])
    for _ in range(downsample):  # a stride-2 3x3 conv with padding 1: n -> ceil(n / 2)
        size = tuple(math.ceil(n / 2) for n in size)
    layout = MultiscaleLayout.build(width, size, branches)
    stem = MultiscaleStem(build_stem("conv", input_shape, width, downsample, groups), layout, groups)
    return stem, build_cell(cell, width, layout=layout, **cell_kwargs), MultiscaleHead(layout, num_classes, pool)
