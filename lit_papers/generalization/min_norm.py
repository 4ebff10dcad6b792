"""Implicit regularisation of SGD on linear models (Zhang et al. 2017, Sec. 5).

For least squares on an over-parameterised linear model (n < d), every SGD update is a multiple
of some data row x_i, so SGD started at w0 = 0 never leaves the row space of X: w = X^T alpha.
If it interpolates (X w = y), then X X^T alpha = y, i.e. w = X^T (X X^T)^-1 y = pinv(X) y -- the
minimum-l2-norm interpolant (the "kernel trick" solution). Any other interpolant adds a
null-space component and has a strictly larger norm.
"""

from __future__ import annotations

import torch


def sgd_from_zero(X: torch.Tensor, y: torch.Tensor, epochs: int = 200, batch_size: int = 1,
                  lr: float | None = None, seed: int = 0, w0: torch.Tensor | None = None) -> torch.Tensor:
    """Minibatch SGD on (1/2B)||X_B w - y_B||^2 from `w0` (default zeros); returns w (d,).

    The default step 1 / max_i ||x_i||^2 is stable for any batch size (it bounds the curvature
    of every minibatch loss). With batch_size=1 it is the Kaczmarz method.
    """
    n, d = X.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
    if lr is None:
        lr = 1.0 / float((X * X).sum(dim=1).max())
    w = torch.zeros(d, dtype=X.dtype) if w0 is None else w0.clone().to(X.dtype)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            Xb, yb = X[idx], y[idx]  # (B, d), (B,)
            grad = Xb.T @ (Xb @ w - yb) / len(idx)  # (d,): a combination of the rows of Xb
            w = w - lr * grad
    return w


def min_norm_interpolant(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pinv(X) y: the least-norm w with X w = y (when X has full row rank)."""
    return torch.linalg.pinv(X) @ y


def kernel_interpolant(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same solution through the kernel: alpha = (X X^T)^-1 y, w = X^T alpha."""
    alpha = torch.linalg.solve(X @ X.T, y)  # (n,)
    return X.T @ alpha


def row_space_residual(w: torch.Tensor, X: torch.Tensor) -> float:
    """||w - P_row(X) w|| / ||w||: how far w is from the span of the data points."""
    projected = torch.linalg.pinv(X) @ (X @ w)
    return float((w - projected).norm() / w.norm().clamp_min(1e-300))


def null_space_direction(X: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A unit vector v with X v = 0 (exists when n < d): adding it keeps the fit, raises the norm."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(X.shape[1], generator=generator, dtype=X.dtype)
    v = v - torch.linalg.pinv(X) @ (X @ v)
    return v / v.norm()
