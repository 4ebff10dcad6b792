"""The discrete planar normalizing flow (Rezende & Mohamed 2015), the baseline of Chen et al. 2018, Fig. 4.

One layer maps f(z) = z + u h(w^T z + b) with h = tanh. Its Jacobian I + u h'(.) w^T is a rank-one
update, so log|det| = log|1 + h'(w^T z + b) u^T w| costs O(D), but the layer moves points along a
single direction u through a single-unit bottleneck: capacity grows only with the depth K.

Invertibility needs w^T u >= -1. The free parameter u is mapped to
u_hat = u + (m(w^T u) - w^T u) w / |w|^2 with m(a) = -1 + softplus(a) > -1, so w^T u_hat = m(w^T u).
The inverse has no closed form, but it is one monotone scalar equation along w (solved by bisection),
which is enough to evaluate the density q(x) on a grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cnf import standard_normal_logprob


class PlanarLayer(nn.Module):
    """z -> z + u_hat tanh(w^T z + b), with the log|det| of its Jacobian. (N, D) -> (N, D), (N,).

    Initialised near the identity: u is set so that w^T u = log(e - 1), where m(w^T u) = 0 and
    u_hat is the part of a N(0, init_scale^2) draw orthogonal to w (a small shear, log|det| = 0).
    ``init_scale=0`` gives the identity exactly.
    """

    def __init__(self, dim: int = 2, init_scale: float = 0.1):
        super().__init__()
        w = torch.randn(dim)
        u = torch.randn(dim) * init_scale
        u = u + (math.log(math.e - 1) - w @ u) * w / w.pow(2).sum()
        self.w, self.u, self.b = nn.Parameter(w), nn.Parameter(u), nn.Parameter(torch.zeros(()))

    def u_hat(self) -> torch.Tensor:
        """u constrained so that w^T u_hat = -1 + softplus(w^T u) > -1 (the layer is invertible)."""
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / self.w.pow(2).sum()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.u_hat()
        a = z @ self.w + self.b  # (N,)
        h = torch.tanh(a)
        # 1 + h'(a) w^T u_hat >= 1 - h'(a) > 0, so the abs is only a guard against rounding.
        log_det = torch.log((1 + (1 - h.pow(2)) * (self.w @ u)).abs())
        return z + h[:, None] * u, log_det

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, iters: int = 80) -> torch.Tensor:
        """z with forward(z) = y. Projected on w, alpha = w^T z solves alpha + (w^T u_hat) tanh(alpha + b) = w^T y,
        whose left side is non-decreasing in alpha and within |w^T u_hat| of alpha: bisect that bracket,
        then z = y - u_hat tanh(alpha + b)."""
        u = self.u_hat()
        wu, target = self.w @ u, y @ self.w
        lo, hi = target - wu.abs() - 1e-6, target + wu.abs() + 1e-6
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            above = mid + wu * torch.tanh(mid + self.b) > target
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        alpha = 0.5 * (lo + hi)
        return y - torch.tanh(alpha + self.b)[:, None] * u


class PlanarFlow(nn.Module):
    """K planar layers on a standard normal base: x = f_K(...f_1(z0)).

    log q(x) = log N(z0; 0, I) - sum_k log|det df_k/dz|.

    Args:
        dim: data dimension D.
        depth: number of layers K.
        init_scale: size of each layer's initial shear (0: the identity map).
    """

    def __init__(self, dim: int = 2, depth: int = 32, init_scale: float = 0.1):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a planar flow needs depth >= 1 layers, got {depth}")
        self.layers = nn.ModuleList(PlanarLayer(dim, init_scale) for _ in range(depth))

    def push_forward(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Base samples z0: (N, D) -> samples x: (N, D) and log q(x): (N,)."""
        log_q = standard_normal_logprob(z0)
        z = z0
        for layer in self.layers:
            z, log_det = layer(z)
            log_q = log_q - log_det
        return z, log_q

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) at arbitrary points (N, D) -> (N,): invert layer by layer, then push forward again."""
        z = x
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return self.push_forward(z)[1]
