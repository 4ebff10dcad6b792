"""Theorem 3 of the DEQ paper: an L-layer ReLU MLP is one weight-tied, input-injected implicit layer.

For z_1 = relu(W_0 x + b_0), z_{i+1} = relu(W_i z_i + b_i) (i = 1..L-1), stack Z = [z_1; ...; z_L]
and set f(Z; x) = relu(W~ Z + U~ x + b~) with W_i in block (i+1, i) of W~ (strictly
block-lower-triangular, hence nilpotent: W~^L = 0), U~ x = [W_0 x; 0; ...] and b~ = [b_0; ...].
Block i+1 of f(Z) only reads block i of Z, so from any start the i-th block is exact after i
iterations: the fixed point is unique, reached in exactly L naive iterations, and since
J_f = D W~ is nilpotent too, (I - J)^-1 = sum_{k<L} J^k and the implicit gradient is backprop's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layer import DEQInfo, DEQLayer


def split_mlp(mlp: nn.Sequential) -> tuple[list[nn.Linear], nn.Linear | None]:
    """Hidden Linear layers (each followed by ReLU) and the optional final Linear readout."""
    layers = [m for m in mlp if not isinstance(m, nn.Flatten)]
    hidden, i = [], 0
    while i + 1 < len(layers) and isinstance(layers[i], nn.Linear) and isinstance(layers[i + 1], nn.ReLU):
        hidden.append(layers[i])
        i += 2
    rest = layers[i:]
    if not hidden or len(rest) > 1 or (rest and not isinstance(rest[0], nn.Linear)):
        raise ValueError("expected an nn.Sequential of (Linear, ReLU) pairs, optionally ending in one "
                         "Linear; "
                         f"got {[type(m).__name__ for m in mlp]}")
    return hidden, (rest[0] if rest else None)


class BlockTriangularCell(nn.Module):
    """f(Z, injection) = relu(W~ Z + injection), sharing its weights with the MLP's Linear layers."""

    def __init__(self, hidden: list[nn.Linear]):
        super().__init__()
        self.hidden = nn.ModuleList(hidden)  # the MLP's own modules: gradients land in them
        self.widths = [layer.out_features for layer in hidden]
        self.offsets = [0]
        for width in self.widths:
            self.offsets.append(self.offsets[-1] + width)

    def weight(self) -> Tensor:
        """W~ (H, H), H = sum of widths: W_i in block (i+1, i), zeros elsewhere."""
        first = self.hidden[0].weight
        size, o = self.offsets[-1], self.offsets
        big = first.new_zeros(size, size)
        for i in range(1, len(self.hidden)):
            big[o[i]:o[i + 1], o[i - 1]:o[i]] = self.hidden[i].weight
        return big

    def injection(self, x: Tensor) -> Tensor:
        """U~ x + b~ (B, H): W_0 x + b_0 in block 1, b_i in block i+1."""
        first = self.hidden[0](x.flatten(1))  # (B, widths[0])
        rest = [layer.bias.expand(x.shape[0], -1) for layer in self.hidden[1:]]
        return torch.cat([first, *rest], dim=1)

    def forward(self, z: Tensor, injection: Tensor) -> Tensor:
        return torch.relu(z @ self.weight().T + injection)

    def init_state(self, injection: Tensor) -> Tensor:
        return torch.zeros_like(injection)


class ImplicitMLP(nn.Module):
    """The MLP evaluated as one DEQ layer; its output is the readout of the last block of Z*."""

    def __init__(self, mlp: nn.Sequential, **deq_kwargs):
        super().__init__()
        hidden, self.readout = split_mlp(mlp)
        self.depth = len(hidden)
        self.cell = BlockTriangularCell(hidden)
        self.deq = DEQLayer(self.cell, **deq_kwargs)

    def forward(self, x: Tensor, z0: Tensor | None = None) -> tuple[Tensor, DEQInfo]:
        z, info = self.deq(self.cell.injection(x), z0)
        last = z[:, self.cell.offsets[-2]:]  # block L = z_L of the MLP
        return (self.readout(last) if self.readout is not None else last), info


def mlp_as_implicit_layer(mlp: nn.Sequential, **deq_kwargs) -> ImplicitMLP:
    """Turn an L-layer ReLU MLP into a single implicit layer with a block-lower-triangular weight.

    The result shares the MLP's parameters. With solver="naive" it converges in exactly L
    iterations from any start; deq_kwargs go to `DEQLayer` (solver, tol, backward, ...).
    """
    return ImplicitMLP(mlp, **deq_kwargs)
