"""Theorem 1 (2n + d weights fit any n labels) and SGD's implicit minimum-norm bias (Sec. 5)."""

import pytest
import torch

from lit_papers.generalization.expressivity import fit_two_layer_relu, interpolant_system_matrix
from lit_papers.generalization.min_norm import (kernel_interpolant, min_norm_interpolant,
                                                null_space_direction, row_space_residual, sgd_from_zero)


@pytest.mark.parametrize("n,d", [(1, 3), (50, 2), (200, 10), (64, 784)])
def test_two_layer_net_has_2n_plus_d_weights_and_fits_random_reals(n, d):
    g = torch.Generator().manual_seed(n + d)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64) * 10
    net = fit_two_layer_relu(z, y)
    assert sum(p.numel() for p in net.parameters()) == 2 * n + d
    assert (net(z) - y).abs().max().item() < 1e-6
    A = interpolant_system_matrix(net, z)  # (n, n)
    assert torch.equal(A, torch.tril(A))
    assert (A.diagonal() > 0).all()


def test_two_layer_net_fits_binary_labels_on_image_like_points():
    g = torch.Generator().manual_seed(0)
    z = torch.rand(300, 3 * 28 * 28, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (300,), generator=g).double()
    net = fit_two_layer_relu(z, y, seed=3)
    assert torch.equal((net(z) > 0.5).double(), y)
    assert (net(z) - y).abs().max().item() < 1e-6


def test_coinciding_points_are_rejected():
    z = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="distinct"):
        fit_two_layer_relu(z, torch.arange(4.0, dtype=torch.float64))


@pytest.mark.parametrize("batch_size", [1, 5, 20])
def test_sgd_from_zero_reaches_the_pinv_solution(batch_size):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 100, generator=g, dtype=torch.float64)  # n < d: infinitely many interpolants
    y = torch.randn(20, generator=g, dtype=torch.float64)
    w = sgd_from_zero(X, y, epochs=200 if batch_size == 1 else 3000, batch_size=batch_size)
    w_star = min_norm_interpolant(X, y)
    assert (X @ w - y).abs().max().item() < 1e-8
    assert torch.allclose(w, w_star, atol=1e-8)
    assert torch.allclose(kernel_interpolant(X, y), w_star, atol=1e-10)
    assert row_space_residual(w, X) < 1e-10


def test_other_interpolants_have_larger_norm_and_sgd_from_elsewhere_does_not_find_min_norm():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(10, 50, generator=g, dtype=torch.float64)
    y = torch.randn(10, generator=g, dtype=torch.float64)
    w_star = min_norm_interpolant(X, y)
    v = null_space_direction(X)
    assert (X @ v).abs().max().item() < 1e-10
    for t in (0.1, 1.0, 10.0):
        assert torch.allclose(X @ (w_star + t * v), y, atol=1e-8)
        assert (w_star + t * v).norm() > w_star.norm()
    # started off the row space, SGD keeps the null-space part of w0: still an interpolant, not min-norm
    w = sgd_from_zero(X, y, epochs=300, w0=3 * v)
    assert (X @ w - y).abs().max().item() < 1e-8
    assert torch.allclose(w, w_star + 3 * v, atol=1e-8)
