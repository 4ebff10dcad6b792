"""Finite-sample expressivity (Zhang et al. 2017, Theorem 1).

A depth-2 ReLU network c(x) = sum_j w_j * relu(<a, x> - b_j) with a in R^d and b, w in R^n --
2n + d weights -- fits any labels y in R^n on n distinct points z_1..z_n in R^d exactly:

1. project: x_i = <a, z_i> with a generic `a`, so that the x_i are distinct; sort them;
2. interleave the biases: b_1 < x_1 < b_2 < x_2 < ... < b_n < x_n;
3. A_ij = relu(x_i - b_j) is then lower-triangular with diagonal x_i - b_i > 0 (full rank);
4. solve A w = y by forward substitution.
"""

from __future__ import annotations

import torch
from torch import nn


class TwoLayerReLUInterpolant(nn.Module):
    """c(x) = relu(x @ a - b) @ w: exactly 2n + d parameters (a: (d,), b: (n,), w: (n,))."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())  # (d,)   shared projection
        self.b = nn.Parameter(b.clone())  # (n,)   one threshold per hidden unit
        self.w = nn.Parameter(w.clone())  # (n,)   output weights

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations relu(<a, x> - b_j), (N, d) -> (N, n); on the fitted points this is A."""
        return torch.relu((x @ self.a)[:, None] - self.b[None, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        return self.hidden(x) @ self.w


def _distinct_projection(z: torch.Tensor, generator: torch.Generator, candidates: int = 16) -> torch.Tensor:
    """A unit vector a whose projections <a, z_i> are pairwise distinct (true for almost every a).

    Of `candidates` random directions we keep the one with the widest smallest gap between
    consecutive projections: the diagonal of A is half that gap, so this conditions the solve.
    """
    n, d = z.shape
    best, best_gap = None, 0.0
    for _ in range(candidates):
        a = torch.randn(d, generator=generator, dtype=z.dtype)
        a = a / a.norm()
        x = torch.sort(z @ a).values
        gap = float((x[1:] - x[:-1]).min()) if n > 1 else 1.0
        if gap > best_gap:
            best, best_gap = a, gap
    if best is None:
        raise ValueError("could not find a projection with distinct values: are the points distinct?")
    return best


def fit_two_layer_relu(z: torch.Tensor, y: torch.Tensor, seed: int = 0) -> TwoLayerReLUInterpolant:
    """Build Theorem 1's depth-2 ReLU net that maps each row z_i of `z` (n, d) exactly to y_i.

    Works in the dtype of `z` (use float64 for an exact fit to ~1e-10). Raises ValueError when
    two points coincide (no function can then fit arbitrary labels).
    """
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError("expected z of shape (n, d) and y of shape (n,), "
                         f"got {tuple(z.shape)}, {tuple(y.shape)}")
    y = y.to(z.dtype)
    generator = torch.Generator().manual_seed(seed)
    a = _distinct_projection(z, generator)
    x, order = torch.sort(z @ a)  # (n,) ascending projections and the permutation that sorts them
    gaps = x[1:] - x[:-1]  # (n-1,), all > 0
    first_gap = gaps.min() if len(gaps) else torch.ones((), dtype=z.dtype)
    # b_1 sits below x_1, b_j halfway between x_{j-1} and x_j: b_1 < x_1 < b_2 < ... < b_n < x_n
    b = torch.cat([(x[:1] - first_gap), (x[1:] + x[:-1]) / 2])
    A = system_matrix(x, b)  # (n, n) lower-triangular
    w = torch.linalg.solve_triangular(A, y[order][:, None], upper=False).squeeze(1)
    return TwoLayerReLUInterpolant(a, b, w)


def system_matrix(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A_ij = relu(x_i - b_j) for sorted projections x (n,) and interleaved thresholds b (n,)."""
    return torch.relu(x[:, None] - b[None, :])


def interpolant_system_matrix(net: TwoLayerReLUInterpolant, z: torch.Tensor) -> torch.Tensor:
    """The matrix A of `net` on points `z`, rows in ascending order of the projection <a, z_i>."""
    with torch.no_grad():
        order = torch.argsort(z @ net.a)
        return net.hidden(z[order])
