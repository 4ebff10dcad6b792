"""Continuous normalizing flow (Chen et al. 2018, section 4; FFJORD's trace estimator).

The flow integrates dz/dt = f(t, z) from the data x = z(0) to z(T), which should
look like a standard normal. The instantaneous change of variables,
d log p(z(t))/dt = -tr(df/dz), gives

    log p(x) = log N(z(T); 0, I) + integral_0^T tr(df/dz(t)) dt,

so the state is augmented with the running integral of the trace. No
determinant is ever computed, and f needs no special structure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lit_papers.neural_ode.odeblock import ODEBlock


def exact_trace(f: torch.Tensor, z: torch.Tensor, eps: torch.Tensor | None, create_graph: bool):
    """tr(df/dz) by D vector-Jacobian products. f, z: (N, D) -> (N,)."""
    del eps
    diag = [
        torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0][:, i]
        for i in range(z.shape[1])
    ]
    return torch.stack(diag, dim=1).sum(dim=1)


def hutchinson_trace(f: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, create_graph: bool):
    """Unbiased estimate eps^T (df/dz) eps with one vector-Jacobian product. (N, D) -> (N,)."""
    eps_j = torch.autograd.grad(f, z, eps, create_graph=create_graph, retain_graph=True)[0]
    return (eps_j * eps).sum(dim=1)


def gaussian_noise(like: torch.Tensor) -> torch.Tensor:
    return torch.randn_like(like)


def rademacher_noise(like: torch.Tensor) -> torch.Tensor:
    return torch.randint_like(like, 0, 2) * 2 - 1


def analytic_trace(f: torch.Tensor, z: torch.Tensor, eps: torch.Tensor | None, create_graph: bool):
    """Placeholder entry: fields with a closed-form ``divergence`` (PlanarField) are called directly."""
    raise TypeError("the analytic trace needs a field with a `divergence(t, z)` method (PlanarField)")


# Methods as data: trace estimators and Hutchinson noise distributions.
TRACES: dict[str, Callable] = {"exact": exact_trace, "hutchinson": hutchinson_trace,
                               "analytic": analytic_trace}
NOISES: dict[str, Callable] = {"gaussian": gaussian_noise, "rademacher": rademacher_noise}


def _pick(table: dict, name: str, what: str):
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; valid: {sorted(table)}")
    return table[name]


class TimeConcatMLP(nn.Module):
    """f(t, z): an MLP that sees t concatenated to the input of every layer. (N, D) -> (N, D)."""

    def __init__(self, dim: int = 2, hidden: tuple[int, ...] = (64, 64, 64)):
        super().__init__()
        sizes = [dim, *hidden, dim]
        self.layers = nn.ModuleList(nn.Linear(a + 1, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = nn.Softplus()  # smooth, so the field stays non-stiff

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(z[:, :1]) * t
        for i, layer in enumerate(self.layers):
            z = layer(torch.cat([tt, z], dim=1))
            if i < len(self.layers) - 1:
                z = self.act(z)
        return z


class CNFDynamics(nn.Module):
    """Augmented field (z, s) -> (f(t, z), tr df/dz), with s the accumulated trace.

    Called with a plain tensor it returns f alone (sampling needs no trace).
    The Hutchinson noise ``eps`` is drawn once per solve (``resample_noise``) and
    held fixed across the solver's steps, so the integrand is a smooth function of t.
    ``eval_trace`` is the estimator in eval mode (exact by default: reported
    log-likelihoods carry no estimator noise).
    """

    def __init__(self, field: nn.Module, trace: str = "exact", noise: str = "gaussian",
                 eval_trace: str = "exact"):
        super().__init__()
        self.field = field
        self.trace_names = {True: trace, False: eval_trace}
        for name in self.trace_names.values():
            _pick(TRACES, name, "trace estimator")
            if name == "analytic" and not hasattr(field, "divergence"):
                raise ValueError("trace='analytic' needs a field with a closed-form `divergence` "
                                 "(PlanarField); use 'exact' or 'hutchinson' for other fields")
        self.noise_fn = _pick(NOISES, noise, "Hutchinson noise")
        self.eps: torch.Tensor | None = None

    @property
    def trace_name(self) -> str:
        """The estimator in use: ``trace`` when training, ``eval_trace`` otherwise."""
        return self.trace_names[self.training]

    def resample_noise(self, z: torch.Tensor) -> None:
        self.eps = self.noise_fn(z) if self.trace_name == "hutchinson" else None

    def forward(self, t: torch.Tensor, state):
        if not isinstance(state, tuple):
            return self.field(t, state)
        z = state[0]
        # Grad must flow through the trace into the parameters only when the caller needs it.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field(t, z)
            if self.trace_name == "analytic":
                tr = self.field.divergence(t, z)
            else:
                tr = TRACES[self.trace_name](f, z, self.eps, create_graph)
        if not create_graph:
            f, tr = f.detach(), tr.detach()
        return f, tr


def standard_normal_logprob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim. (N, D) -> (N,)."""
    return -0.5 * (z.pow(2).sum(dim=1) + z.shape[1] * math.log(2 * math.pi))


class CNF(nn.Module):
    """A continuous normalizing flow with a standard normal base at time T.

    Args:
        field: the vector field f(t, z), an ``nn.Module``.
        T: flow time.
        trace: ``exact`` or ``hutchinson`` (training); eval_trace: the same in eval mode.
        noise: Hutchinson noise, ``gaussian`` or ``rademacher``.
        **solver: ``ODEBlock`` arguments (method, rtol, atol, eval_rtol, eval_atol,
            step_size, adjoint, max_num_steps).
    """

    def __init__(self, field: nn.Module, T: float = 1.0, trace: str = "exact",
                 noise: str = "gaussian", eval_trace: str = "exact", **solver):
        super().__init__()
        self.dynamics = CNFDynamics(field, trace, noise, eval_trace)
        self.block = ODEBlock(self.dynamics, T=T, **solver)

    @property
    def T(self) -> float:
        return self.block.T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, D) data -> (z(T): (N, D), integral of the trace: (N,))."""
        self.dynamics.resample_noise(x)
        s0 = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        return self.block((x, s0))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) by the instantaneous change of variables. (N, D) -> (N,)."""
        z, trace_integral = self(x)
        return standard_normal_logprob(z) + trace_integral

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Integrate backwards from time T to 0: base points (N, D) -> data space (N, D)."""
        t = torch.tensor([self.T, 0.0], dtype=z.dtype, device=z.device)
        return self.block.integrate(z, t)[-1]

    @torch.no_grad()
    def sample(self, n: int, dim: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n samples: z ~ N(0, I) pushed back through the flow. -> (n, dim)."""
        ref = next(self.parameters())
        z = torch.randn(n, dim, generator=generator).to(ref)
        return self.inverse(z)
