"""How gradients reach the parameters through z* = f(z*; x): the implicit hook, phantom and unroll.

`implicit_output` is the paper's Theorem 1 as a tensor hook. The forward solve runs without a
graph; only one call z_out = f(z_in) with z_in = z*.detach() is recorded, so the saved memory is
that of a single cell call whatever the number of solver iterations. The hook on z_out receives
the upstream gradient g = dl/dz_out and replaces it by u solving u = g + u J_f(z*) (a linear fixed
point solved with vector-Jacobian products through the same recorded call); autograd then
continues through f(z_in) and delivers u df/dtheta and u df/dx. The hook's state (its `busy` flag
and the recorded call) lives in a closure per call, so calling the layer several times before one
backward is safe, and the hook never refers to module attributes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .solvers import Fn, SolverResult, solve

BACKWARD_MODES = ("ift", "phantom", "unroll")


def check_backward_mode(mode: str) -> str:
    if mode not in BACKWARD_MODES:
        raise ValueError(f"unknown deq backward mode {mode!r}; valid: {', '.join(BACKWARD_MODES)}")
    return mode


def implicit_output(f: Fn, z_star: Tensor, solver: str = "anderson", solver_kwargs: dict | None = None,
                    on_backward: Callable[[SolverResult], None] | None = None) -> Tensor:
    """Return f(z*) whose backward applies (I - J_f(z*))^-1 to the incoming gradient.

    f: maps (B, ...) -> (B, ...); it may close over inputs and parameters that need gradients.
    solver / solver_kwargs: root finder for the backward linear system (any registered solver,
    chosen independently of the forward one). `on_backward` receives the backward SolverResult.
    """
    z_in = z_star.detach().requires_grad_()
    z_out = f(z_in)
    busy = [False]  # set while the hook's own vector-Jacobian products run through z_out

    def hook(grad: Tensor) -> Tensor | None:
        if busy[0] or grad is None:
            return None  # a VJP issued by this hook (or an undefined grad): pass it through
        busy[0] = True
        try:
            def linear_map(u: Tensor) -> Tensor:  # u -> g + u J_f(z*)
                (uj,) = torch.autograd.grad(z_out, z_in, u, retain_graph=True)
                return uj + grad

            result = solve(solver, linear_map, torch.zeros_like(grad), **(solver_kwargs or {}))
        finally:
            busy[0] = False
        if on_backward is not None:
            on_backward(result)
        return result.z

    z_out.register_hook(hook)
    return z_out


def phantom_output(f: Fn, z_star: Tensor, steps: int = 1, tau: float = 1.0) -> Tensor:
    """k damped steps z <- (1 - tau) z + tau f(z) from z* with autograd (the phantom gradient).

    steps=1, tau=1 is the Jacobian-free gradient: (I - J)^-1 is replaced by I.
    """
    if steps < 1:
        raise ValueError(f"phantom gradient needs steps >= 1, got {steps}")
    z = z_star.detach()
    for _ in range(steps):
        z = (1 - tau) * z + tau * f(z)
    return z


def unrolled_output(f: Fn, z0: Tensor, steps: int, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """Plain differentiable iteration from z0 (the test oracle and the pretraining stack).

    Returns (z_steps, z_{steps-1}); their difference is the residual of the last iterate.
    """
    if steps < 1:
        raise ValueError(f"unrolled iteration needs steps >= 1, got {steps}")
    z_prev, z = z0, z0
    for _ in range(steps):
        z_prev, z = z, (1 - tau) * z + tau * f(z)
    return z, z_prev
