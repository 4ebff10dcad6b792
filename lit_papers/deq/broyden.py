"""Limited-memory ("good") Broyden's method for batched root finding of g(z) = f(z) - z."""

from __future__ import annotations

import torch
from torch import Tensor

from .solvers import SOLVERS, Fn, ResidualTracker, SolverResult, flat_fn


@SOLVERS.register("broyden")
@torch.no_grad()
def broyden(f: Fn, z0: Tensor, max_iter: int = 50, tol: float = 1e-3, stop_mode: str = "rel",
            memory: int = 20, step: float = 1.0, div_factor: float = 1e6) -> SolverResult:
    """Broyden's method on g(z) = f(z) - z with at most `memory` rank-one updates kept.

    The inverse Jacobian of g is approximated as Binv = -I + U V^T (U, V: (B, D, r)), which starts
    at -I so the first step is a plain fixed-point step. When the buffer is full the approximation
    restarts from -I, which caps memory at O(memory x D) per sample instead of growing with the
    iteration count. A vanishing update denominator skips the update (counted in `fallbacks`).
    """
    if memory < 1:
        raise ValueError(f"broyden memory must be >= 1, got {memory}")
    shape, fn = z0.shape, flat_fn(f, z0.shape)
    batch = shape[0]
    z = z0.reshape(batch, -1).clone()  # (B, D)
    track = ResidualTracker(z, tol, stop_mode, div_factor)
    U = torch.zeros(batch, z.shape[1], memory, dtype=z.dtype, device=z.device)
    V = torch.zeros_like(U)
    g = track.update(z, fn(z))
    apply_binv = lambda w: -w + (U @ (V.transpose(1, 2) @ w[:, :, None]))[:, :, 0]  # Binv w
    for k in range(max_iter):
        if track.done():
            break
        track.step()
        active = track.active[:, None]
        dz = torch.where(active, -step * apply_binv(g), torch.zeros_like(z))
        z_new = z + dz
        g_new = track.update(z_new, fn(z_new))
        dg = g_new - g
        binv_dg = apply_binv(dg)  # (B, D)
        den = (dz * binv_dg).sum(dim=1)  # (B,)
        vT = -dz + (V @ (U.transpose(1, 2) @ dz[:, :, None]))[:, :, 0]  # dz^T Binv, (B, D)
        scale = dz.norm(dim=1) * binv_dg.norm(dim=1)
        ok = active[:, 0] & (den.abs() > 1e-10 * scale) & torch.isfinite(den)
        track.fallbacks += (active[:, 0] & ~ok).sum()
        u = torch.where(ok[:, None], (dz - binv_dg) / torch.where(ok, den, 1.0)[:, None], 0.0)
        U[:, :, k % memory] = u
        V[:, :, k % memory] = torch.where(ok[:, None], vT, 0.0)
        z, g = z_new, g_new
        if (k + 1) % memory == 0:
            # Restart from Binv = -I: overwriting the oldest update instead (a ring buffer) leaves
            # an inverse that no longer satisfies the secant equations and can diverge.
            U.zero_()
            V.zero_()
    return track.result(shape)
