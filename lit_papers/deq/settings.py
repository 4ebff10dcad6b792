"""The DEQ's settings groups: `Solver` (model.solver), `Backward` (model.backward) and
`JacobianPenalty` (model.jacobian), and `layer_kwargs`, which turns them into `DEQLayer` arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lit_papers.core.settings import Group

from . import anderson, broyden  # noqa: F401  (register the solvers)
from .implicit import check_backward_mode
from .solvers import SOLVERS, STOP_MODES


@dataclass(frozen=True)
class Solver(Group):
    """The forward root finder: `model.solver`.

    Args:
        name: `naive`, `anderson` or `broyden`; max_iter, tol, stop_mode (`rel` or `abs`): its budget and
            per-sample stopping rule; kwargs: its own options (e.g. `{memory: 18}` for broyden).
        eval_max_iter: the budget outside training (None: max_iter).
    """

    name: str = "anderson"
    max_iter: int = 30
    tol: float = 1e-3
    stop_mode: str = "rel"
    kwargs: Optional[dict] = None
    eval_max_iter: Optional[int] = None

    def __post_init__(self):
        SOLVERS.get(self.name)
        if self.max_iter < 1:
            raise ValueError(f"solver.max_iter must be >= 1, got {self.max_iter}")
        if self.eval_max_iter is not None and self.eval_max_iter < 1:
            raise ValueError(f"solver.eval_max_iter must be >= 1 (or unset), got {self.eval_max_iter}")
        if self.tol < 0:
            raise ValueError(f"solver.tol must be >= 0, got {self.tol}")
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"solver.stop_mode must be one of {', '.join(STOP_MODES)}, got {self.stop_mode!r}")


@dataclass(frozen=True)
class Backward(Group):
    """How gradients pass the equilibrium: `model.backward`.

    Args:
        mode: `ift` (implicit-function-theorem hook), `phantom` or `unroll`.
        solver, max_iter, tol, kwargs: the ift hook's own root finder.
        phantom_steps, phantom_tau: damped steps from z* of the phantom gradient.
        unroll_steps: differentiable iterations from z0 of the unrolled mode.
    """

    mode: str = "ift"
    solver: str = "anderson"
    max_iter: int = 30
    tol: float = 1e-4
    kwargs: Optional[dict] = None
    phantom_steps: int = 1
    phantom_tau: float = 1.0
    unroll_steps: int = 30

    def __post_init__(self):
        check_backward_mode(self.mode), SOLVERS.get(self.solver)
        for name in ("max_iter", "phantom_steps", "unroll_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"backward.{name} must be >= 1, got {getattr(self, name)}")
        if self.tol < 0:
            raise ValueError(f"backward.tol must be >= 0, got {self.tol}")
        if not 0.0 < self.phantom_tau <= 1.0:
            raise ValueError(f"backward.phantom_tau must lie in (0, 1], got {self.phantom_tau}")


@dataclass(frozen=True)
class JacobianPenalty(Group):
    """The Hutchinson ||J_f||_F^2 penalty (Bai et al. 2021): `model.jacobian`.

    Args:
        weight: its weight in the loss (0: off); freq: the fraction of training steps it is computed
            on, in [0, 1]; probes: random probes per estimate.
    """

    weight: float = 0.0
    freq: float = 1.0
    probes: int = 1

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"jacobian.weight must be >= 0, got {self.weight}")
        if not 0.0 <= self.freq <= 1.0:
            raise ValueError(f"jacobian.freq is the fraction of steps with the penalty, in [0, 1]; got {self.freq}")
        if self.probes < 1:
            raise ValueError(f"jacobian.probes must be >= 1, got {self.probes}")


def layer_kwargs(solver=None, backward=None, jacobian=None, pretrain_depth: int = 2) -> dict:
    """`DEQLayer` keyword arguments from the groups (each an instance, a dict of its fields or None)."""
    s, b, j = Solver.of(solver), Backward.of(backward), JacobianPenalty.of(jacobian)
    return dict(solver=s.name, max_iter=s.max_iter, tol=s.tol, stop_mode=s.stop_mode, solver_kwargs=s.kwargs,
                eval_max_iter=s.eval_max_iter, backward=b.mode, backward_solver=b.solver,
                backward_max_iter=b.max_iter, backward_tol=b.tol, backward_kwargs=b.kwargs,
                phantom_steps=b.phantom_steps, phantom_tau=b.phantom_tau, unroll_steps=b.unroll_steps,
                pretrain_depth=pretrain_depth, jac_probes=j.probes)
