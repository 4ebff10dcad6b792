"""Theorem 3: an L-layer ReLU MLP is one implicit layer with a strictly block-lower-triangular weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_papers.deq import mlp_as_implicit_layer

DT = torch.float64
WIDTHS = (7, 5, 6, 4, 3)  # input, then L = 4 hidden layers


def random_mlp(seed=0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for d_in, d_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(WIDTHS[-1], 2)).to(DT)


def test_weight_is_strictly_block_lower_triangular_and_nilpotent():
    implicit = mlp_as_implicit_layer(random_mlp())
    w = implicit.cell.weight().detach()
    offs = implicit.cell.offsets
    for i in range(len(offs) - 1):
        for j in range(len(offs) - 1):
            block = w[offs[i]:offs[i + 1], offs[j]:offs[j + 1]]
            assert (block.abs().sum() > 0) == (i == j + 1)
    depth = implicit.depth
    assert torch.linalg.matrix_power(w, depth - 1).abs().sum() > 0
    assert torch.equal(torch.linalg.matrix_power(w, depth), torch.zeros_like(w))


@pytest.mark.parametrize("start", ["zeros", "random"])
def test_naive_iteration_reproduces_the_mlp_in_exactly_l_steps(start):
    mlp = random_mlp()
    implicit = mlp_as_implicit_layer(mlp, solver="naive", max_iter=50, tol=1e-14)
    x = torch.randn(16, WIDTHS[0], dtype=DT)
    z0 = None if start == "zeros" else torch.randn(16, sum(WIDTHS[1:]), dtype=DT) * 3
    with torch.no_grad():
        out, info = implicit(x, z0)
        ref = mlp(x)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert (info.forward.nstep == implicit.depth).all()  # converged at the L-th iterate
    assert info.forward.abs_residual.max() < 1e-14
    # Every hidden activation is a block of the fixed point.
    h, z = x, info.forward.z
    for i, layer in enumerate(implicit.cell.hidden):
        h = torch.relu(layer(h))
        torch.testing.assert_close(z[:, implicit.cell.offsets[i]:implicit.cell.offsets[i + 1]], h,
                                   atol=1e-12, rtol=0)


@pytest.mark.parametrize("backward_solver", ["naive", "anderson", "broyden"])
def test_implicit_gradient_equals_backprop_through_the_mlp(backward_solver):
    mlp = random_mlp(seed=1)
    x = torch.randn(10, WIDTHS[0], dtype=DT, requires_grad=True)
    target = torch.randn(10, 2, dtype=DT)
    params = [*mlp.parameters(), x]
    ref = torch.autograd.grad(((mlp(x) - target) ** 2).sum(), params)
    implicit = mlp_as_implicit_layer(mlp, solver="naive", max_iter=20, tol=1e-14,
                                     backward_solver=backward_solver, backward_tol=1e-14,
                                     backward_max_iter=100)
    out, info = implicit(x)
    got = torch.autograd.grad(((out - target) ** 2).sum(), params)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=0)
    if backward_solver == "naive":
        # (I - J)^-1 = sum_{k<L} J^k: the Neumann series is exact after L terms.
        assert (info.backward.nstep <= implicit.depth).all()


def test_rejects_networks_that_are_not_relu_mlps():
    with pytest.raises(ValueError, match="Linear, ReLU"):
        mlp_as_implicit_layer(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)))
