"""`ODESolve`: the torchdiffeq solve settings of the neural-ODE modules, the `model.ode` group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lit_papers.core.settings import Group

from .odeblock import get_solver


@dataclass(frozen=True)
class ODESolve(Group):
    """How an ODE block is solved: `model.ode` of NeuralODEModule, CNFModule, DensityMatchingModule and
    LatentODEModule (see ``ODEBlock``).

    Args:
        method: a torchdiffeq method name (``odeblock.SOLVERS``: dopri5, rk4, euler, ...).
        rtol, atol: tolerances of adaptive methods in training.
        eval_rtol, eval_atol: the tolerances outside training (None: the training ones).
        step_size: the grid step of fixed-step methods (None: one step over [0, T]).
        adjoint: gradients by the adjoint ODE (O(1) memory) instead of backprop through the solver.
        max_num_steps: cap on adaptive steps, so a stiff field fails fast instead of stalling.
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    eval_rtol: Optional[float] = None
    eval_atol: Optional[float] = None
    step_size: Optional[float] = None
    adjoint: bool = True
    max_num_steps: int = 1000

    def __post_init__(self):
        try:
            get_solver(self.method)
        except ValueError as err:
            raise ValueError(f"ode.method: {err}") from None
        for name in ("rtol", "atol", "eval_rtol", "eval_atol", "step_size"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"ode.{name} must be positive, got {value}")
        if self.max_num_steps < 1:
            raise ValueError(f"ode.max_num_steps must be >= 1, got {self.max_num_steps}")

    def kwargs(self, adjoint: bool = True) -> dict:
        """The solver keywords of ``ODEBlock`` (and CNF, LatentODE, build_classifier, which pass them on);
        without ``adjoint`` where the caller decides it."""
        out = self.as_dict()
        if not adjoint:
            del out["adjoint"]
        return out
