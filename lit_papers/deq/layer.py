"""`DEQLayer`: a cell z' = cell(z, injection) turned into its equilibrium z* = cell(z*, injection)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import anderson, broyden  # noqa: F401  (register the solvers)
from .implicit import check_backward_mode, implicit_output, phantom_output, unrolled_output
from .jacobian import jacobian_frobenius
from .solvers import SOLVERS, SolverResult, solve


@dataclass
class DEQInfo:
    """What one call of a DEQLayer did. `backward` is filled in by the hook once backward runs."""

    mode: str  # "ift", "phantom", "unroll", "pretrain" or "eval"
    forward: SolverResult | None = None
    backward: SolverResult | None = None
    jac_loss: Tensor | None = None
    unroll_residual: Tensor | None = None  # (B,) relative residual of an unrolled stack
    extra: dict = field(default_factory=dict)

    def set_backward(self, result: SolverResult) -> None:
        self.backward = result


def warm_parametrizations(module: nn.Module) -> None:
    """Evaluate every parametrized weight once, with grad on, inside `parametrize.cached()`.

    The solver runs under no_grad; if it touched a weight-normed weight first, the cache would
    hold a weight without a graph and no gradient would reach g and v.
    """
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in sub.parametrizations:
                getattr(sub, name)


class DEQLayer(nn.Module):
    """Equilibrium layer around `cell(z, injection) -> z` with `cell.init_state(injection) -> z0`.

    solver / max_iter / tol / solver_kwargs: forward root finder (naive, anderson, broyden).
    backward: "ift" (implicit hook; backward_solver etc. pick its own root finder), "phantom"
    (phantom_steps damped steps from z* with autograd), or "unroll" (unroll_steps plain
    differentiable iterations from z0, no solver: the oracle). eval_max_iter: forward budget
    when not training (None = max_iter). While `pretraining` is True the layer is a weight-tied
    stack of `pretrain_depth` cell applications trained by plain backprop.
    forward(..., compute_jac=True) also returns the Hutchinson estimate of ||J||_F^2 / D at z*
    (with `jac_probes` probes) in `DEQInfo.jac_loss`, differentiable in the cell's parameters.
    `settings.layer_kwargs` gives these arguments from a module's `solver`, `backward` and `jacobian` groups.
    """

    def __init__(self, cell: nn.Module, solver: str = "anderson", max_iter: int = 30, tol: float = 1e-3,
                 stop_mode: str = "rel", solver_kwargs: dict | None = None, backward: str = "ift",
                 backward_solver: str = "anderson", backward_max_iter: int = 30, backward_tol: float = 1e-4,
                 backward_kwargs: dict | None = None, phantom_steps: int = 1, phantom_tau: float = 1.0,
                 unroll_steps: int = 30, eval_max_iter: int | None = None, pretrain_depth: int = 2,
                 jac_probes: int = 1):
        super().__init__()
        SOLVERS.get(solver), SOLVERS.get(backward_solver)  # fail early on unknown names
        self.cell = cell
        self.solver, self.max_iter, self.tol, self.stop_mode = solver, max_iter, tol, stop_mode
        self.solver_kwargs = dict(solver_kwargs or {})
        self.backward_mode = check_backward_mode(backward)
        self.backward_solver, self.backward_kwargs = backward_solver, dict(backward_kwargs or {})
        self.backward_max_iter, self.backward_tol = backward_max_iter, backward_tol
        self.phantom_steps, self.phantom_tau, self.unroll_steps = phantom_steps, phantom_tau, unroll_steps
        self.eval_max_iter, self.pretrain_depth = eval_max_iter, pretrain_depth
        self.jac_probes = jac_probes
        self.pretraining = False

    def solve_forward(self, f, z0: Tensor, max_iter: int | None = None, solver: str | None = None,
                      **overrides) -> SolverResult:
        """Forward root finding only (no graph); used by forward() and the solver figures."""
        if max_iter is None:
            max_iter = self.max_iter if self.training or self.eval_max_iter is None else self.eval_max_iter
        kwargs = {"max_iter": max_iter, "tol": self.tol, "stop_mode": self.stop_mode, **self.solver_kwargs}
        return solve(solver or self.solver, f, z0, **{**kwargs, **overrides})

    def forward(self, injection: Tensor, z0: Tensor | None = None,
                compute_jac: bool = False) -> tuple[Tensor, DEQInfo]:
        """Return (z, info) with z (same shape as the cell state) carrying the chosen gradient."""
        f = lambda z: self.cell(z, injection)
        z0 = self.cell.init_state(injection) if z0 is None else z0
        needs_grad = torch.is_grad_enabled() and (
            injection.requires_grad or any(p.requires_grad for p in self.cell.parameters()))
        with parametrize.cached():
            warm_parametrizations(self.cell)
            if self.pretraining or self.backward_mode == "unroll":
                depth = self.pretrain_depth if self.pretraining else self.unroll_steps
                z, z_prev = unrolled_output(f, z0, depth)
                info = DEQInfo("pretrain" if self.pretraining else "unroll")
                diff = (z - z_prev).detach().flatten(1).norm(dim=1)
                info.unroll_residual = diff / (z.detach().flatten(1).norm(dim=1) + 1e-12)
                return z, info
            result = self.solve_forward(f, z0)
            if not needs_grad:
                info = DEQInfo("eval", forward=result)
                with torch.no_grad():
                    return f(result.z), info
            info = DEQInfo(self.backward_mode, forward=result)
            if self.backward_mode == "ift":
                kwargs = {"max_iter": self.backward_max_iter, "tol": self.backward_tol,
                          **self.backward_kwargs}
                z = implicit_output(f, result.z, self.backward_solver, kwargs, on_backward=info.set_backward)
            else:
                z = phantom_output(f, result.z, self.phantom_steps, self.phantom_tau)
            if compute_jac:
                info.jac_loss = jacobian_frobenius(f, result.z, n_probes=self.jac_probes)
        return z, info
