"""Cells for deep equilibrium models, picked by name from `DEQ_CELLS`.

A cell maps (z, injection) -> z' with z and the injection of the same shape; `init_state` gives
z0. The injection (the input's features) is computed once by a stem (`parts.py`), outside the
fixed-point solve, so each solver step only pays for the cell. The multiscale cell (MDEQ) is in
`multiscale.py`; the explicit weight-tied stack of a cell in `weight_tied.py`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from lit_papers.registry import Registry

DEQ_CELLS = Registry("deq cell")


def _maybe_weight_norm(layer: nn.Module, enabled: bool) -> nn.Module:
    # Weight norm decouples the scale of each filter from its direction, which keeps the cell's
    # Lipschitz constant (and so the solver's difficulty) from drifting during training.
    return _weight_norm(layer) if enabled else layer


class _ResidualCell(nn.Module):
    """MDEQ's block: z' = GN3(relu(z + GN2(B(relu(GN1(A z))) + injection))) for linear maps A, B."""

    def __init__(self, first: nn.Module, second: nn.Module, hidden: int, width: int, groups: int):
        super().__init__()
        self.first, self.second = first, second
        self.norm1 = nn.GroupNorm(math.gcd(groups, hidden), hidden)
        self.norm2 = nn.GroupNorm(math.gcd(groups, width), width)
        self.norm3 = nn.GroupNorm(math.gcd(groups, width), width)

    def forward(self, z: Tensor, injection: Tensor) -> Tensor:
        y = torch.relu(self.norm1(self.first(z)))
        y = self.norm2(self.second(y) + injection)
        return self.norm3(torch.relu(z + y))

    def init_state(self, injection: Tensor) -> Tensor:
        return torch.zeros_like(injection)


@DEQ_CELLS.register("conv")
class ConvCell(_ResidualCell):
    """MDEQ-style conv cell on (B, width, H, W) states: two 3x3 convs, group norm, input injection."""

    def __init__(self, width: int, hidden: int | None = None, groups: int = 8, kernel: int = 3,
                 weight_norm: bool = True):
        hidden = hidden or width
        pad = kernel // 2
        super().__init__(
            _maybe_weight_norm(nn.Conv2d(width, hidden, kernel, padding=pad, bias=False), weight_norm),
            _maybe_weight_norm(nn.Conv2d(hidden, width, kernel, padding=pad, bias=False), weight_norm),
            hidden, width, groups)


@DEQ_CELLS.register("mlp")
class MLPCell(_ResidualCell):
    """The same block with Linear maps on (B, width) states."""

    def __init__(self, width: int, hidden: int | None = None, groups: int = 8, weight_norm: bool = True):
        hidden = hidden or width
        super().__init__(
            _maybe_weight_norm(nn.Linear(width, hidden, bias=False), weight_norm),
            _maybe_weight_norm(nn.Linear(hidden, width, bias=False), weight_norm),
            hidden, width, groups)


@DEQ_CELLS.register("transformer")
class TransformerCell(nn.Module):
    """A weight-tied causal Transformer block on (B, T, width) states, as in the DEQ-Transformer:

    a = z + injection; h = LN1(a + Attn(a)); z' = LN2(h + FF(h)), with causal self-attention, so
    position t of the equilibrium depends only on positions <= t.
    """

    def __init__(self, width: int, heads: int = 4, hidden: int | None = None, weight_norm: bool = True):
        super().__init__()
        if width % heads:
            raise ValueError(f"transformer cell width {width} must be divisible by heads {heads}")
        hidden = hidden or 4 * width
        self.heads = heads
        self.qkv = _maybe_weight_norm(nn.Linear(width, 3 * width), weight_norm)
        self.proj = _maybe_weight_norm(nn.Linear(width, width), weight_norm)
        self.ff = nn.Sequential(_maybe_weight_norm(nn.Linear(width, hidden), weight_norm), nn.GELU(),
                                _maybe_weight_norm(nn.Linear(hidden, width), weight_norm))
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)

    def attention(self, a: Tensor) -> Tensor:
        batch, length, width = a.shape
        q, k, v = self.qkv(a).view(batch, length, 3, self.heads, width // self.heads).unbind(dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, dh)
        # Written out rather than scaled_dot_product_attention: the Jacobian penalty needs a double
        # backward, which the fused CPU kernel does not implement.
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, heads, T, T)
        causal = torch.ones(length, length, dtype=torch.bool, device=a.device).triu(1)
        out = scores.masked_fill(causal, float("-inf")).softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))

    def forward(self, z: Tensor, injection: Tensor) -> Tensor:
        a = z + injection
        h = self.norm1(a + self.attention(a))
        return self.norm2(h + self.ff(h))

    def init_state(self, injection: Tensor) -> Tensor:
        return torch.zeros_like(injection)


def build_cell(cell: str, width: int, **cell_kwargs) -> nn.Module:
    """The registered cell `cell` of state width `width`."""
    return DEQ_CELLS.get(cell)(width, **cell_kwargs)
