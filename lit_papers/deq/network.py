"""`DEQNet`: stem -> equilibrium of a cell -> head, the image classifier of `DEQModule`."""

from __future__ import annotations

from torch import Tensor, nn

from lit_papers.models.registry import MODELS

from .layer import DEQInfo, DEQLayer
from .parts import build_parts


class DEQNet(nn.Module):
    """An MDEQ-style classifier: the stem computes the injection once, the DEQ layer finds
    z* = cell(z*, injection), the head reads out z*.

    cell: "conv" (MDEQ block with group norm), "multiscale" (MDEQ's multi-resolution state, see
    `multiscale.py`) or "mlp"; width: state channels/features;
    downsample: stride-2 stages in the conv stem; pool: pooled grid size in the conv head;
    cell_kwargs: passed to the cell (groups, hidden, weight_norm); deq_kwargs: to `DEQLayer` (from the
settings groups: `settings.layer_kwargs`).
    """

    def __init__(self, input_shape, num_classes, cell: str = "conv", width: int = 32, downsample: int = 1,
                 pool: int = 1, cell_kwargs: dict | None = None, **deq_kwargs):
        super().__init__()
        self.stem, cell_module, self.head = build_parts(cell, tuple(input_shape), num_classes, width, downsample,
                                                        pool, **dict(cell_kwargs or {}))
        self.deq = DEQLayer(cell_module, **deq_kwargs)

    def forward(self, x: Tensor, return_info: bool = False,
                compute_jac: bool = False) -> Tensor | tuple[Tensor, DEQInfo]:
        injection = self.stem(x)
        z, info = self.deq(injection, compute_jac=compute_jac)
        logits = self.head(z)
        return (logits, info) if return_info else logits


@MODELS.register("deq")
def deq(input_shape, num_classes, **kwargs) -> DEQNet:
    return DEQNet(tuple(input_shape), num_classes, **kwargs)
