"""Jacobian diagnostics and the Jacobian regulariser of a DEQ cell at its fixed point."""

from __future__ import annotations

import torch
from torch import Tensor

from .solvers import Fn


def jacobian_frobenius(f: Fn, z: Tensor, n_probes: int = 1, probe: Tensor | None = None,
                       create_graph: bool = True) -> Tensor:
    """Hutchinson estimate of ||J_f(z)||_F^2 / D, averaged over the batch (a scalar).

    For e ~ N(0, I), E ||e^T J||^2 = ||J||_F^2, so one VJP per probe gives an unbiased estimate.
    With create_graph=True the estimate is differentiable in the parameters of f (double
    backward), which is what the penalty needs. `probe` (B, ...) fixes the noise (for tests).
    z is detached first: the penalty shapes f around z*, it does not move z* itself.
    """
    z_in = z.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z_in)
        dim = fz[0].numel()
        total = fz.new_zeros(())
        for _ in range(n_probes):
            eps = torch.randn_like(fz) if probe is None else probe
            (vjp,) = torch.autograd.grad(fz, z_in, eps, create_graph=create_graph)
            total = total + vjp.pow(2).flatten(1).sum(dim=1).mean() / dim
    return total / n_probes


@torch.no_grad()
def spectral_radius(f: Fn, z: Tensor, n_iter: int = 20) -> Tensor:
    """Power-iteration estimate (B,) of the dominant |eigenvalue| of J_f(z), using VJPs.

    rho(J) < 1 makes the backward system (I - J) invertible and the naive backward convergent.
    """
    z_in = z.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z_in)
    v = torch.randn_like(fz)
    norm = torch.ones(fz.shape[0], dtype=fz.dtype, device=fz.device)
    for _ in range(n_iter):
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (v.dim() - 1))
        (v,) = torch.autograd.grad(fz, z_in, v, retain_graph=True)
        norm = v.flatten(1).norm(dim=1)
    return norm
