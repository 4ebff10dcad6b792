"""Anderson acceleration (type II, Walker & Ni 2011) for batched fixed-point problems z = f(z)."""

from __future__ import annotations

import torch
from torch import Tensor

from .solvers import SOLVERS, Fn, ResidualTracker, SolverResult, flat_fn


def mixing_weights(G: Tensor, lam: float, newest: int = -1) -> tuple[Tensor, Tensor]:
    """Weights alpha (B, n) minimising ||sum_i alpha_i G_i|| subject to sum_i alpha_i = 1.

    G: (B, n, D) past residuals, in any order; `newest` is the row of the latest one. Solves the
    bordered system [[0, 1^T], [1, G G^T + lam I]] per sample (lam relative to the mean squared
    residual). Returns (alpha, fell_back): `fell_back` (B,) marks samples whose system was singular
    at the requested lam; they are retried with a larger ridge and, if still singular, get weight 1
    on the newest iterate (a plain iteration step).
    """
    batch, n, _ = G.shape
    GG = G @ G.transpose(1, 2)  # (B, n, n)
    H = torch.zeros(batch, n + 1, n + 1, dtype=G.dtype, device=G.device)
    H[:, 0, 1:], H[:, 1:, 0] = 1.0, 1.0
    rhs = torch.zeros(batch, n + 1, 1, dtype=G.dtype, device=G.device)
    rhs[:, 0] = 1.0
    eye = torch.eye(n, dtype=G.dtype, device=G.device)
    # The ridge is relative to the residual scale so the weights do not degrade to a plain
    # average as residuals shrink; the second try, with a much larger ridge, cures a singular system.
    scale = GG.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(G.dtype).tiny)[:, None, None]
    first_failed = None
    for ridge_lam in (lam, lam + 1e-2):
        H[:, 1:, 1:] = GG + ridge_lam * scale * eye
        sol, info = torch.linalg.solve_ex(H, rhs)
        alpha = sol[:, 1:, 0]  # (B, n)
        failed = (info != 0) | ~torch.isfinite(alpha).all(dim=1)
        first_failed = failed if first_failed is None else first_failed
        if not failed.any():
            return alpha, first_failed
    plain_step = torch.zeros_like(alpha)
    plain_step[:, newest] = 1.0
    return torch.where(failed[:, None], plain_step, alpha), first_failed


@SOLVERS.register("anderson")
@torch.no_grad()
def anderson(f: Fn, z0: Tensor, max_iter: int = 50, tol: float = 1e-3, stop_mode: str = "rel",
             m: int = 6, lam: float = 1e-4, beta: float = 1.0, div_factor: float = 1e6) -> SolverResult:
    """Anderson acceleration with memory m, ridge lam and mixing beta (the DEQ paper uses 6, 1e-4, 1).

    The next iterate mixes the last m iterates with the weights that minimise the combined
    residual. A singular mixing system falls back to a larger ridge, then to a plain step, and is
    counted in `fallbacks`.
    """
    if m < 1:
        raise ValueError(f"anderson memory m must be >= 1, got {m}")
    shape, fn = z0.shape, flat_fn(f, z0.shape)
    batch = shape[0]
    z = z0.reshape(batch, -1).clone()  # (B, D)
    track = ResidualTracker(z, tol, stop_mode, div_factor)
    X = torch.zeros(batch, m, z.shape[1], dtype=z.dtype, device=z.device)  # past iterates
    F = torch.zeros_like(X)  # their images f(z)
    g = track.update(z, fn(z))
    X[:, 0], F[:, 0] = z, z + g
    for k in range(1, max_iter + 1):
        if track.done():
            break
        track.step()
        n = min(k, m)
        # Slots 0..n-1 hold the last n iterates (a ring buffer once full). The weights do not depend
        # on the rows' order, so the buffers are read as views, not gathered into a copy each step.
        Xn, Fn_ = X[:, :n], F[:, :n]  # (B, n, D)
        alpha, failed = mixing_weights(Fn_ - Xn, lam, newest=(k - 1) % m)
        track.fallbacks += (failed & track.active).sum()
        mixed = alpha[:, None] @ Fn_  # (B, 1, D)
        if beta != 1.0:  # damped mixing; the undamped step needs no product with the iterates
            mixed = beta * mixed + (1 - beta) * (alpha[:, None] @ Xn)
        z = torch.where(track.active[:, None], mixed[:, 0], z)
        g = track.update(z, fn(z))
        X[:, k % m] = z
        torch.add(z, g, out=F[:, k % m])
    return track.result(shape)
