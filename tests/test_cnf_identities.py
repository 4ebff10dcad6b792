"""Identities of continuous normalizing flows: change of variables, trace estimators, inverse."""

import math

import pytest
import torch
from torch import nn

from lit_papers.neural_ode import CNF, TimeConcatMLP, standard_normal_logprob
from lit_papers.neural_ode.cnf import exact_trace, hutchinson_trace, rademacher_noise
from lit_papers.neural_ode.planar import PlanarField

TIGHT = dict(method="dopri5", rtol=1e-9, atol=1e-9)


class LinearField(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


def _mlp_field(seed=0):
    torch.manual_seed(seed)
    return TimeConcatMLP(2, (16, 16)).double()


def test_linear_cnf_log_density_equals_exact_change_of_variables():
    torch.manual_seed(0)
    A = torch.randn(2, 2, dtype=torch.float64) * 0.5
    T = 1.5
    flow = CNF(LinearField(A), T=T, trace="exact", **TIGHT)
    x = torch.randn(6, 2, dtype=torch.float64)
    # z(T) = expm(AT) x and log p(x) = log N(expm(AT) x) + T tr(A)
    expected = standard_normal_logprob(x @ torch.linalg.matrix_exp(A * T).T) + T * torch.trace(A)
    torch.testing.assert_close(flow.log_prob(x), expected, rtol=1e-8, atol=1e-8)


def test_exact_trace_equals_jacobian_trace():
    field = _mlp_field()
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.3, dtype=torch.float64)
    tr = exact_trace(field(t, z), z, None, create_graph=False)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: field(t, v[None])[0], z[i].detach())
        torch.testing.assert_close(tr[i], torch.trace(jac))


def test_hutchinson_is_unbiased_within_five_standard_errors():
    field = _mlp_field()
    draws = 20000
    z = torch.randn(1, 2, dtype=torch.float64).expand(draws, 2).clone().requires_grad_(True)
    t = torch.tensor(0.7, dtype=torch.float64)
    f = field(t, z)
    exact = exact_trace(f, z, None, create_graph=False)[0]
    std = {}
    for name, eps in (("gaussian", torch.randn_like(z)), ("rademacher", rademacher_noise(z))):
        est = hutchinson_trace(f, z, eps, create_graph=False)  # one estimate per draw, same point
        std[name] = est.std()
        assert abs(est.mean() - exact) < 5 * std[name] / math.sqrt(draws)
    # Rademacher noise removes the Jacobian diagonal's contribution to the variance.
    assert std["rademacher"] < std["gaussian"]


def test_cnf_hutchinson_log_prob_averages_to_exact():
    torch.manual_seed(0)
    field = _mlp_field()
    x = torch.randn(1, 2, dtype=torch.float64).expand(4000, 2).clone()
    exact = CNF(field, trace="exact", **TIGHT).log_prob(x[:1])[0]
    est = CNF(field, trace="hutchinson", method="rk4", step_size=0.1).log_prob(x)
    assert abs(est.mean() - exact) < 5 * est.std() / math.sqrt(len(est)) + 1e-4


def test_cnf_is_invertible():
    flow = CNF(_mlp_field(), T=1.0, **TIGHT)
    x = torch.randn(8, 2, dtype=torch.float64) * 2
    z, _ = flow(x)
    assert not torch.allclose(z, x, atol=1e-2)  # the flow actually moves points
    torch.testing.assert_close(flow.inverse(z), x, rtol=1e-7, atol=1e-7)


def test_cnf_density_integrates_to_one():
    flow = CNF(_mlp_field(seed=3), T=1.0, method="dopri5", rtol=1e-6, atol=1e-6)
    side = torch.linspace(-7, 7, 141, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (side[1] - side[0]) ** 2
    assert abs(mass.item() - 1.0) < 0.01


def test_gradients_flow_through_trace_into_parameters():
    flow = CNF(_mlp_field(), trace="hutchinson", noise="rademacher", **TIGHT)
    flow.log_prob(torch.randn(4, 2, dtype=torch.float64)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_adjoint_cnf_gradients_equal_direct():
    grads = []
    for adjoint in (False, True):
        flow = CNF(_mlp_field(), trace="exact", adjoint=adjoint, rtol=1e-12, atol=1e-12)
        x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        flow.log_prob(x).sum().backward()
        grads.append([p.grad for p in flow.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_unknown_trace_or_noise_lists_valid_names():
    with pytest.raises(ValueError, match="valid.*hutchinson"):
        CNF(_mlp_field(), trace="hutch")
    with pytest.raises(ValueError, match="valid.*rademacher"):
        CNF(_mlp_field(), noise="uniform")


def test_planar_field_analytic_trace_equals_exact_and_gives_same_density():
    torch.manual_seed(0)
    field = PlanarField(2, width=8).double()
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.4, dtype=torch.float64)
    torch.testing.assert_close(field.divergence(t, z), exact_trace(field(t, z), z, None, False))
    x = torch.randn(5, 2, dtype=torch.float64)
    analytic = CNF(field, trace="analytic", eval_trace="analytic", **TIGHT).log_prob(x)
    torch.testing.assert_close(analytic, CNF(field, **TIGHT).log_prob(x), rtol=1e-7, atol=1e-7)
    with pytest.raises(ValueError, match="closed-form"):
        CNF(_mlp_field(), trace="analytic")
