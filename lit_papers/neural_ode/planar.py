"""The paper's planar CNF field: M time-dependent planar units whose trace costs O(M D).

    f(t, z) = sum_m u_m(t) tanh(w_m(t)^T z + b_m(t))
    tr(df/dz) = sum_m (u_m . w_m) (1 - tanh^2(w_m^T z + b_m))

The discrete planar flow needs one layer per unit and a determinant per layer; in
continuous time the M units simply add, and so do their traces (Chen et al. 2018, sec. 4).
A hypernetwork maps t to the units' parameters, with a sigmoid gate on each u_m.
"""

from __future__ import annotations

import torch
from torch import nn


class PlanarField(nn.Module):
    """Width-M planar vector field with an analytic divergence. (N, D) -> (N, D).

    Args:
        dim: data dimension D.
        width: number of planar units M.
        hyper_hidden: hidden units of the hypernetwork t -> (u, w, b, gate).
    """

    def __init__(self, dim: int = 2, width: int = 32, hyper_hidden: int = 32):
        super().__init__()
        self.dim, self.width = dim, width
        self.hyper = nn.Sequential(
            nn.Linear(1, hyper_hidden), nn.Tanh(), nn.Linear(hyper_hidden, hyper_hidden), nn.Tanh(),
            nn.Linear(hyper_hidden, width * (2 * dim + 2)),
        )

    def units(self, t: torch.Tensor):
        """u, w: (M, D); b: (M,) at time t; u already multiplied by its gate sigma(t)."""
        params = self.hyper(t.reshape(1, 1).to(self.hyper[0].weight)).view(self.width, 2 * self.dim + 2)
        u, w = params[:, : self.dim], params[:, self.dim: 2 * self.dim]
        b, gate = params[:, -2], torch.sigmoid(params[:, -1])
        return u * gate[:, None], w, b

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        u, w, b = self.units(t)
        return torch.tanh(z @ w.T + b) @ u  # (N, M) @ (M, D)

    def divergence(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """tr(df/dz) in closed form, O(N M D). -> (N,)."""
        u, w, b = self.units(t)
        slope = 1 - torch.tanh(z @ w.T + b).pow(2)  # (N, M)
        return slope @ (u * w).sum(dim=1)
