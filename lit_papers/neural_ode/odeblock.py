"""ODE block: h(T) = ODESolve(h(0), f, 0, T) on torchdiffeq, with NFE counting.

The block is the continuous-depth replacement for a stack of residual blocks
(Chen et al. 2018, section 2). Gradients come either from backpropagating
through the solver's operations (``adjoint=False``, "RK-Net") or from the
adjoint method (``adjoint=True``, "ODE-Net"), which solves a second ODE
backwards in time and stores no intermediate activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from lit_papers.errors import RunFailed


@dataclass(frozen=True)
class SolverKind:
    """How a torchdiffeq method takes its step: adaptive (tolerances) or on a fixed grid."""

    name: str
    adaptive: bool
    order: int


# Methods as data: the solvers this project exposes, by torchdiffeq name.
SOLVERS: dict[str, SolverKind] = {
    k.name: k
    for k in (
        SolverKind("dopri5", True, 5),
        SolverKind("dopri8", True, 8),
        SolverKind("bosh3", True, 3),
        SolverKind("fehlberg2", True, 2),
        SolverKind("adaptive_heun", True, 2),
        SolverKind("euler", False, 1),
        SolverKind("midpoint", False, 2),
        SolverKind("heun3", False, 3),
        SolverKind("rk4", False, 4),
        SolverKind("explicit_adams", False, 4),
        SolverKind("implicit_adams", False, 4),
    )
}


def get_solver(method: str) -> SolverKind:
    """Look up a solver by name; unknown names list the valid ones."""
    if method not in SOLVERS:
        raise ValueError(f"unknown ODE solver method {method!r}; valid methods: {sorted(SOLVERS)}")
    return SOLVERS[method]


class ODESolverError(RunFailed):
    """The solver could not integrate the vector field (stiff or exploding dynamics)."""


_SOLVER_FAILURES = ("underflow in dt", "max_num_steps exceeded", "non-finite values")


def translate_solver_error(err: AssertionError) -> Exception:
    """Turn torchdiffeq's bare AssertionError into an error that names the fixes.

    Returns the original error unchanged when it is not a known solver failure.
    """
    msg = str(err)
    if not any(key in msg for key in _SOLVER_FAILURES):
        return err
    return ODESolverError(
        f"the ODE solver failed ({msg.splitlines()[0][:200]}): the learned vector field is stiff "
        "or exploding. Options that help: a fixed-step solver (model.ode.method='rk4' with ode.step_size=0.1, "
        "never stalls), looser tolerances (ode.rtol/ode.atol=1e-3), a smaller ode.max_num_steps to fail "
        "faster, weight decay or a smaller learning rate, smooth activations (softplus/tanh), "
        "or a shorter integration time T."
    )


class CountedDynamics(nn.Module):
    """Wraps f(t, h) and counts its evaluations (the NFE)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.nfe = 0

    def forward(self, t: torch.Tensor, h):
        self.nfe += 1
        return self.func(t, h)


class ODEBlock(nn.Module):
    """Integrates dh/dt = f(t, h) from 0 to ``T`` and returns h(T).

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, h)``.
        T: integration time.
        method: a torchdiffeq method name (see ``SOLVERS``).
        rtol, atol: tolerances for adaptive methods during training.
        eval_rtol, eval_atol: tolerances in eval mode (default: the training ones).
        step_size: grid step for fixed-grid methods (default: one step over [0, T]).
        adjoint: gradients by the adjoint ODE (O(1) memory) instead of backprop
            through the solver.
        max_num_steps: cap on adaptive steps, so a stiff field fails fast instead of stalling.

    After ``forward``, ``nfe_forward`` holds the number of evaluations of f; after the
    backward pass ``nfe_backward`` holds the evaluations made by the adjoint solve
    (0 without the adjoint, since plain backprop never calls f).
    """

    def __init__(
        self,
        func: nn.Module,
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        eval_rtol: float | None = None,
        eval_atol: float | None = None,
        step_size: float | None = None,
        adjoint: bool = False,
        max_num_steps: int = 1000,
    ):
        super().__init__()
        self.solver = get_solver(method)
        if T <= 0:
            raise ValueError(f"integration time T must be > 0, got {T}")
        self.dynamics = CountedDynamics(func)
        self.T, self.method, self.adjoint = float(T), method, adjoint
        self.rtol, self.atol = rtol, atol
        self.eval_rtol = rtol if eval_rtol is None else eval_rtol
        self.eval_atol = atol if eval_atol is None else eval_atol
        self.step_size, self.max_num_steps = step_size, max_num_steps
        self.nfe_forward = 0

    @property
    def nfe_backward(self) -> int:
        """Evaluations of f since the last forward returned (the adjoint's backward solve)."""
        return self.dynamics.nfe

    def solver_kwargs(self) -> dict:
        """rtol/atol/method/options for odeint, depending on train/eval mode."""
        if self.solver.adaptive:
            options = {"max_num_steps": self.max_num_steps}
        else:
            options = {"step_size": self.step_size} if self.step_size else {}
        rtol, atol = (self.rtol, self.atol) if self.training else (self.eval_rtol, self.eval_atol)
        return {"rtol": rtol, "atol": atol, "method": self.method, "options": options}

    def integrate(self, h0, t: torch.Tensor):
        """Solve from ``t[0]`` through ``t``; returns the states at every time in ``t``."""
        kwargs = self.solver_kwargs()
        self.dynamics.nfe = 0
        try:
            if self.adjoint:
                # The backward solve uses the same method and tolerances as the forward one.
                out = odeint_adjoint(
                    self.dynamics, h0, t, adjoint_rtol=kwargs["rtol"], adjoint_atol=kwargs["atol"],
                    adjoint_method=self.method, adjoint_options=kwargs["options"], **kwargs,
                )
            else:
                out = odeint(self.dynamics, h0, t, **kwargs)
        except AssertionError as err:
            raise translate_solver_error(err) from err
        self.nfe_forward = self.dynamics.nfe
        self.dynamics.nfe = 0  # from here on, counts the backward (adjoint) evaluations
        return out

    def forward(self, h0):
        """h0: any state (tensor or tuple of tensors) -> state at time T, same structure."""
        ref = h0[0] if isinstance(h0, tuple) else h0
        t = torch.tensor([0.0, self.T], dtype=ref.dtype, device=ref.device)
        out = self.integrate(h0, t)
        return tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]


@contextmanager
def solver_settings(block: ODEBlock, method: str, rtol: float, atol: float) -> Iterator[ODEBlock]:
    """Temporarily solve ``block`` with another method and eval tolerances (restored on exit)."""
    saved = (block.solver, block.method, block.eval_rtol, block.eval_atol)
    block.solver, block.method = get_solver(method), method
    block.eval_rtol, block.eval_atol = rtol, atol
    try:
        yield block
    finally:
        block.solver, block.method, block.eval_rtol, block.eval_atol = saved
