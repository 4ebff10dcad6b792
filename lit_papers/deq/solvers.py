"""Root finders for z = f(z): shared bookkeeping, the registry, and damped fixed-point iteration.

Every solver works on a batch of independent problems. It flattens the state to (B, D), keeps a
per-sample residual, freezes each sample once it has converged or diverged (per-sample stopping),
and returns each sample's lowest-residual iterate. A solver never raises on a bad problem: a
non-finite or exploding iterate marks the sample `diverged` and the sample keeps its best finite
iterate; numerical fallbacks are counted in `SolverResult.fallbacks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_papers.registry import Registry

SOLVERS = Registry("deq solver")

Fn = Callable[[Tensor], Tensor]
STOP_MODES = ("rel", "abs")


@dataclass
class SolverResult:
    """Outcome of one batched solve; all per-sample tensors have leading dimension B."""

    z: Tensor  # (B, ...) lowest-residual iterate per sample
    abs_residual: Tensor  # (B,) ||f(z) - z|| at the returned z
    rel_residual: Tensor  # (B,) ||f(z) - z|| / ||f(z)||
    nstep: Tensor  # (B,) iterations the sample was active for
    converged: Tensor  # (B,) bool, residual below tol
    diverged: Tensor  # (B,) bool, a non-finite or exploding iterate was met
    nfe: int  # evaluations of f (each evaluates the whole batch)
    fallbacks: int  # numerical fallbacks taken (singular Anderson system, Broyden skip)
    trace: Tensor  # (n_iter + 1, B) stopping residual of every iterate (NaN once frozen)

    @property
    def unconverged_frac(self) -> float:
        return float((~self.converged).float().mean())


class ResidualTracker:
    """Per-sample residuals, best iterate, freezing and the residual trace shared by all solvers.

    `tol` applies to the relative residual ||g|| / ||f(z)|| (stop_mode="rel") or to ||g||
    ("abs"), with g = f(z) - z. A sample whose absolute residual exceeds `div_factor` times its
    first one (or turns non-finite) is frozen as diverged.
    """

    def __init__(self, z0: Tensor, tol: float, stop_mode: str, div_factor: float):
        if stop_mode not in STOP_MODES:
            raise ValueError(f"unknown stop_mode {stop_mode!r}; valid: {', '.join(STOP_MODES)}")
        batch = z0.shape[0]
        self.tol, self.stop_mode, self.div_factor = tol, stop_mode, div_factor
        self.best_z = z0.clone()  # (B, D)
        inf = torch.full((batch,), float("inf"), dtype=z0.dtype, device=z0.device)
        self.best_abs, self.best_rel, self.first = inf.clone(), inf.clone(), None
        self.active = torch.ones(batch, dtype=torch.bool, device=z0.device)
        self.converged = torch.zeros_like(self.active)
        self.diverged = torch.zeros_like(self.active)
        self.nstep = torch.zeros(batch, dtype=torch.long, device=z0.device)
        self.trace: list[Tensor] = []
        self.nfe = 0
        self.fallbacks: int | Tensor = 0  # summed on the device, no host sync per iteration

    def update(self, z: Tensor, fz: Tensor) -> Tensor:
        """Record iterate z (B, D) with f(z) = fz; return g = fz - z (rows zeroed where not finite, or
        so large that their norm overflows: such a sample is frozen as diverged either way)."""
        self.nfe += 1
        g = fz - z
        abs_res = g.norm(dim=1)
        finite = torch.isfinite(abs_res)  # a non-finite entry of g makes its norm non-finite
        abs_res = torch.where(finite, abs_res, float("inf"))
        rel_res = torch.where(finite, abs_res / (fz.norm(dim=1) + 1e-12), float("inf"))
        stop_res = rel_res if self.stop_mode == "rel" else abs_res
        if self.first is None:
            self.first = abs_res.clamp_min(1e-12)
        # Only active samples may improve their best iterate; frozen ones keep theirs.
        better = self.active & (stop_res < (self.best_rel if self.stop_mode == "rel" else self.best_abs))
        self.best_z = torch.where(better[:, None], z, self.best_z)
        self.best_abs = torch.where(better, abs_res, self.best_abs)
        self.best_rel = torch.where(better, rel_res, self.best_rel)
        self.trace.append(torch.where(self.active, stop_res, float("nan")))
        newly_conv = self.active & (stop_res <= self.tol)
        # Divergence is judged on the absolute residual: the relative one is meaningless when
        # f(z) passes near 0 (e.g. an oscillating iteration).
        newly_div = self.active & (~finite | (abs_res > self.div_factor * self.first))
        self.converged |= newly_conv
        self.diverged |= newly_div & ~newly_conv
        self.active &= ~(newly_conv | newly_div)
        return torch.where(finite[:, None], g, 0.0)

    def step(self) -> None:
        """Count one more iteration for every still-active sample."""
        self.nstep += self.active.long()

    def done(self) -> bool:
        return not bool(self.active.any())

    def result(self, shape: torch.Size) -> SolverResult:
        return SolverResult(
            z=self.best_z.reshape(shape), abs_residual=self.best_abs, rel_residual=self.best_rel,
            nstep=self.nstep, converged=self.converged.clone(), diverged=self.diverged.clone(),
            nfe=self.nfe, fallbacks=int(self.fallbacks), trace=torch.stack(self.trace),
        )


def flat_fn(f: Fn, shape: torch.Size) -> Fn:
    """Wrap f acting on (B, ...) tensors into a map on (B, D) tensors."""
    return lambda z: f(z.reshape(shape)).reshape(shape[0], -1)


@SOLVERS.register("naive")
@torch.no_grad()
def naive(f: Fn, z0: Tensor, max_iter: int = 50, tol: float = 1e-3, stop_mode: str = "rel",
          tau: float = 1.0, div_factor: float = 1e6) -> SolverResult:
    """Damped fixed-point iteration z <- (1 - tau) z + tau f(z); converges when f is contractive."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"naive solver damping tau must lie in (0, 1], got {tau}")
    shape, fn = z0.shape, flat_fn(f, z0.shape)
    z = z0.reshape(shape[0], -1).clone()  # (B, D)
    track = ResidualTracker(z, tol, stop_mode, div_factor)
    g = track.update(z, fn(z))
    for _ in range(max_iter):
        if track.done():
            break
        track.step()
        z = torch.where(track.active[:, None], z + tau * g, z)
        g = track.update(z, fn(z))
    return track.result(shape)


def solve(name: str, f: Fn, z0: Tensor, **kwargs) -> SolverResult:
    """Run the registered solver `name` (naive, anderson, broyden) on z = f(z) from z0."""
    return SOLVERS.get(name)(f, z0, **kwargs)
