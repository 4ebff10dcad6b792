"""Multiscale DEQ (MDEQ, Bai, Koltun & Kolter 2020): one equilibrium over several resolutions.

The state holds `branches` feature maps at once, branch i with `width * 2**i` channels at 1/2**i
of the stem's resolution. One cell application runs a residual block per branch, each with its
own input injection, then fuses: every branch receives the sum of all branches brought to its
resolution (stride-2 3x3 convs downwards, a 1x1 conv and nearest upsampling upwards), followed
by ReLU and group norm. The equilibrium
is a fixed point of all resolutions jointly, so information crosses scales inside the solve.

MDEQ injects the input into the highest-resolution branch only. Here every branch gets an
injection (the stem's map, downsampled): a branch without one has the all-zero state as a fixed
point, where group norm's Jacobian is ~1/sqrt(eps), so the slightest signal from another scale
threw the solver off (relative residual ~0.1 after 150 Anderson iterations in float64, against
1e-11 with closed cross-scale paths). The cross-scale convs start small (std `fuse_init_std`).

The root finders work on one tensor per sample, so the branches are packed into a flat
(B, D) vector (`MultiscaleLayout.pack` / `unpack`); the solvers, the implicit backward, the
Jacobian penalty and the explicit weight-tied stack therefore apply unchanged. The head pools
every branch and classifies their concatenation (MDEQ's classification head, simplified).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells import DEQ_CELLS, _maybe_weight_norm, _ResidualCell


@dataclass(frozen=True)
class MultiscaleLayout:
    """Shapes of the branches: (channels, height, width) per branch, highest resolution first."""

    shapes: tuple[tuple[int, int, int], ...]

    @classmethod
    def build(cls, width: int, height_width: tuple[int, int], branches: int) -> MultiscaleLayout:
        if branches < 1:
            raise ValueError(f"a multiscale cell needs branches >= 1, got {branches}")
        h, w = height_width
        if min(h, w) >> (branches - 1) < 1:
            raise ValueError(f"{branches} branches halve a {h}x{w} state map below one pixel; use fewer "
                             "branches or less stem downsampling")
        # a stride-2 3x3 conv with padding 1 maps n -> ceil(n / 2)
        shapes, size = [], (h, w)
        for i in range(branches):
            shapes.append((width * 2**i, *size))
            size = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
        return cls(tuple(shapes))

    @property
    def sizes(self) -> list[int]:
        return [c * h * w for c, h, w in self.shapes]

    def pack(self, maps: list[Tensor]) -> Tensor:
        return torch.cat([m.flatten(1) for m in maps], dim=1)

    def unpack(self, z: Tensor) -> list[Tensor]:
        return [piece.view(len(z), *shape) for piece, shape in zip(torch.split(z, self.sizes, dim=1), self.shapes)]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _small(conv: nn.Conv2d, std: float) -> nn.Conv2d:
    nn.init.normal_(conv.weight, 0.0, std)
    return conv


def _down(c_in: int, c_out: int, steps: int, std: float) -> nn.Sequential:
    """`steps` stride-2 3x3 convs (ReLU between them): to a branch below."""
    layers: list[nn.Module] = []
    for s in range(steps):
        out = c_out if s == steps - 1 else c_in
        layers.append(_small(nn.Conv2d(c_in, out, 3, stride=2, padding=1, bias=False), std))
        if s < steps - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """1x1 conv, then nearest upsampling: to a branch above."""

    def __init__(self, c_in: int, c_out: int, size: tuple[int, int], std: float):
        super().__init__()
        self.conv, self.size = _small(nn.Conv2d(c_in, c_out, 1, bias=False), std), size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(self.conv(x), size=self.size, mode="nearest")


@DEQ_CELLS.register("multiscale")
class MultiscaleCell(nn.Module):
    """MDEQ cell on a packed multiscale state: (B, D) -> (B, D), the injection packed alike.

    Args:
        width: channels of the highest-resolution branch (branch i has width * 2**i).
        layout: the branches' shapes (from `MultiscaleLayout.build`; DEQNet makes it).
        groups, weight_norm: as for the conv cell; hidden: unused (the blocks keep their width).
    """

    def __init__(self, width: int, layout: MultiscaleLayout | None = None, groups: int = 8,
                 weight_norm: bool = True, hidden: int | None = None, fuse_init_std: float = 0.01):
        super().__init__()
        if layout is None:
            raise ValueError("the multiscale cell needs its branches' shapes: build it with DEQNet or "
                             "build_parts('multiscale', input_shape, ...)")
        self.layout = layout
        conv = lambda c: _maybe_weight_norm(nn.Conv2d(c, c, 3, padding=1, bias=False), weight_norm)
        self.blocks = nn.ModuleList(_ResidualCell(conv(c), conv(c), c, c, groups) for c, _, _ in layout.shapes)
        n = len(layout.shapes)
        self.fuse = nn.ModuleList()
        for j, (c_j, h_j, w_j) in enumerate(layout.shapes):
            row = nn.ModuleList()
            for i, (c_i, _, _) in enumerate(layout.shapes):
                if i == j:
                    row.append(nn.Identity())
                elif i < j:
                    row.append(_down(c_i, c_j, j - i, fuse_init_std))
                else:
                    row.append(_Up(c_i, c_j, (h_j, w_j), fuse_init_std))
            self.fuse.append(row)
        self.post = nn.ModuleList(_norm(c, groups) for c, _, _ in layout.shapes) if n > 1 else None

    def forward(self, z: Tensor, injection: Tensor) -> Tensor:
        blocks = [block(m, inj) for block, m, inj in zip(self.blocks, self.layout.unpack(z),
                                                         self.layout.unpack(injection))]
        if self.post is None:
            return self.layout.pack(blocks)
        fused = [norm(torch.relu(sum(f(b) for f, b in zip(row, blocks)))) for row, norm in zip(self.fuse, self.post)]
        return self.layout.pack(fused)

    def init_state(self, injection: Tensor) -> Tensor:
        return torch.zeros_like(injection)


class MultiscaleStem(nn.Module):
    """Input -> packed injection of every branch: the conv stem's map for branch 0, then a
    stride-2 3x3 conv + group norm per branch below it."""

    def __init__(self, stem: nn.Module, layout: MultiscaleLayout, groups: int = 8):
        super().__init__()
        self.stem, self.layout = stem, layout
        shapes = layout.shapes
        self.down = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), _norm(c_out, groups))
            for (c_in, _, _), (c_out, _, _) in zip(shapes[:-1], shapes[1:]))

    def forward(self, x: Tensor) -> Tensor:
        maps = [self.stem(x)]
        for down in self.down:
            maps.append(down(maps[-1]))
        return self.layout.pack(maps)


class MultiscaleHead(nn.Module):
    """Packed state -> logits: average-pool each branch to pool x pool, concatenate, classify."""

    def __init__(self, layout: MultiscaleLayout, num_classes: int, pool: int = 1):
        super().__init__()
        self.layout, self.pool = layout, nn.AdaptiveAvgPool2d(pool)
        self.linear = nn.Linear(sum(c for c, _, _ in layout.shapes) * pool * pool, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        return self.linear(torch.cat([self.pool(m).flatten(1) for m in self.layout.unpack(z)], dim=1))
