"""Identities of Neural ODEs: ResNet = Euler, adjoint = backprop, linear flow = expm, NFE counts."""

import pytest
import torch
from torch import nn

from lit_papers.neural_ode import (
    ConvDynamics, ODEBlock, ODESolverError, ResidualStack, build_classifier, count_parameters,
)


class MLPField(nn.Module):
    """A small time-dependent field on (N, D) states."""

    def __init__(self, dim=3, hidden=16, dtype=torch.float64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.to(dtype)

    def forward(self, t, z):
        return self.net(torch.cat([torch.ones_like(z[:, :1]) * t, z], dim=1))


class LinearField(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


def _grads(module, x):
    return [p.grad.clone() for p in module.parameters()] + [x.grad.clone()]


@pytest.mark.parametrize("depth", [1, 4])
def test_weight_tied_resnet_equals_euler_step_one(depth):
    torch.manual_seed(0)
    f = ConvDynamics(8)
    resnet = ResidualStack(f, depth)
    ode = ODEBlock(f, T=depth, method="euler", step_size=1.0)
    x1 = torch.randn(2, 8, 5, 5, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)

    out_res, out_ode = resnet(x1), ode(x2)
    assert torch.equal(out_res, out_ode)
    assert ode.nfe_forward == depth

    out_res.pow(2).sum().backward()
    g_res = _grads(f, x1)
    f.zero_grad()
    out_ode.pow(2).sum().backward()
    g_ode = _grads(f, x2)
    for a, b in zip(g_res, g_ode):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_untied_resnet_differs_from_euler():
    # The identity is specific to weight tying: independent blocks are a different map.
    torch.manual_seed(0)
    blocks = [ConvDynamics(8) for _ in range(3)]
    x = torch.randn(2, 8, 5, 5)
    untied = ResidualStack(blocks, 3)(x)
    euler = ODEBlock(blocks[0], T=3, method="euler", step_size=1.0)(x)
    assert not torch.allclose(untied, euler)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_adjoint_gradients_equal_direct_backprop_float64(method):
    torch.manual_seed(0)
    field = MLPField()
    kw = dict(T=1.3, method=method, rtol=1e-10, atol=1e-10, step_size=0.01)
    direct, adjoint = ODEBlock(field, **kw), ODEBlock(field, adjoint=True, **kw)
    t = torch.tensor([0.0, 0.4, 1.3], dtype=torch.float64)
    grads = []
    for block in (direct, adjoint):
        field.zero_grad()
        h0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        h0.requires_grad_(True)
        out = block.integrate(h0, t)  # (3 times, 4, 3): a loss at several observation times
        (out[1].sin().sum() + out[2].pow(2).sum()).backward()
        grads.append(_grads(field, h0))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    assert direct.nfe_backward == 0 and adjoint.nfe_backward > 0


def test_linear_dynamics_match_matrix_exponential():
    torch.manual_seed(0)
    A = torch.randn(3, 3, dtype=torch.float64) * 0.7
    z0 = torch.randn(5, 3, dtype=torch.float64)
    T = 2.0
    block = ODEBlock(LinearField(A), T=T, method="dopri5", rtol=1e-10, atol=1e-10)
    expected = z0 @ torch.linalg.matrix_exp(A * T).T
    torch.testing.assert_close(block(z0), expected, rtol=1e-8, atol=1e-8)


def test_nfe_counts_fixed_grid_and_adaptive():
    torch.manual_seed(0)
    field = MLPField(dtype=torch.float32)
    z0 = torch.randn(4, 3)
    for method, per_step in (("euler", 1), ("rk4", 4)):
        block = ODEBlock(field, T=1.0, method=method, step_size=0.1)
        block(z0)
        assert block.nfe_forward == 10 * per_step
    nfe = {}
    for tol in (1e-2, 1e-7):
        block = ODEBlock(field, T=5.0, method="dopri5", rtol=tol, atol=tol)
        block(z0)
        nfe[tol] = block.nfe_forward
    assert nfe[1e-2] < nfe[1e-7]


def test_nfe_backward_zero_without_adjoint_and_counted_with_it():
    torch.manual_seed(0)
    field = MLPField(dtype=torch.float32)
    z0 = torch.randn(4, 3)
    for adjoint in (False, True):
        block = ODEBlock(field, T=1.0, method="dopri5", adjoint=adjoint)
        block(z0).sum().backward()
        assert block.nfe_forward > 0
        assert (block.nfe_backward > 0) == adjoint


def test_eval_tolerances_apply_in_eval_mode():
    torch.manual_seed(0)
    block = ODEBlock(MLPField(dtype=torch.float32), T=5.0, rtol=1e-2, atol=1e-2,
                     eval_rtol=1e-7, eval_atol=1e-7)
    z0 = torch.randn(4, 3)
    block(z0)
    train_nfe = block.nfe_forward
    block.eval()
    block(z0)
    assert block.nfe_forward > train_nfe


class Exploding(nn.Module):
    def forward(self, t, z):
        return z.pow(3) * 50.0  # blows up in finite time for |z| ~ 1


@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("max_num_steps", [1000, 50])
def test_exploding_field_raises_clear_error_fast(adjoint, max_num_steps):
    block = ODEBlock(Exploding(), T=1.0, method="dopri5", adjoint=adjoint, max_num_steps=max_num_steps)
    with pytest.raises(ODESolverError, match="ode.method='rk4'.*ode.rtol/ode.atol"):
        block(torch.ones(2, 2) * 2.0)
    # Fast = a bounded amount of work: dopri5 makes 6 evaluations per attempted step plus 2 to
    # choose the first step, and the cap stops the solve after max_num_steps attempts.
    assert 0 < block.dynamics.nfe <= 6 * max_num_steps + 2


def test_unknown_method_and_variant_list_valid_names():
    with pytest.raises(ValueError, match="valid methods.*dopri5"):
        ODEBlock(nn.Identity(), method="rk45")
    with pytest.raises(ValueError, match="valid variants.*odenet"):
        build_classifier("odenet2", (1, 28, 28), 10)


def test_table1_variants_share_footing_and_order_parameters():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 28, 28)
    nets = {v: build_classifier(v, (1, 28, 28), 10, channels=16, depth=6, method="rk4",
                                step_size=0.5) for v in ("mlp", "resnet", "rknet", "odenet")}
    for net in nets.values():
        assert net(x).shape == (3, 10)
    params = {v: count_parameters(n) for v, n in nets.items()}
    # RK-Net and ODE-Net are the same network; ResNet has 6 independent blocks instead of one.
    assert params["rknet"] == params["odenet"] < params["resnet"]
    assert nets["odenet"].ode_block.adjoint and not nets["rknet"].ode_block.adjoint
    assert nets["resnet"].ode_block is None
