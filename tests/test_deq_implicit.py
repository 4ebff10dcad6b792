"""Implicit backward: equals the unrolled gradient, gradcheck, constant memory, re-entrancy, eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_papers.deq import DEQLayer, jacobian_frobenius, spectral_radius

DT = torch.float64


class TanhCell(nn.Module):
    """f(z, inj) = tanh(W z + inj) with ||W||_2 = rho: a contraction when rho < 1."""

    def __init__(self, dim=12, rho=0.45, seed=0, weight=None):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, dim, generator=gen, dtype=DT)
        self.weight = nn.Parameter(rho * w / torch.linalg.matrix_norm(w, 2)) if weight is None else weight

    def forward(self, z, inj):
        return torch.tanh(z @ self.weight.T + inj)

    def init_state(self, inj):
        return torch.zeros_like(inj)


def problem(seed=0, batch=5, dim=12):
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(batch, dim, generator=gen, dtype=DT, requires_grad=True)
    target = torch.randn(batch, dim, generator=gen, dtype=DT)
    return TanhCell(dim, seed=seed), x, target


def grads(layer, x, target):
    """Gradients of a quadratic loss w.r.t. (W, x) through the layer."""
    z, info = layer(x)
    loss = ((z - target) ** 2).sum()
    gw, gx = torch.autograd.grad(loss, (layer.cell.weight, x))
    return gw, gx, info


def oracle(cell, x, target, steps=200):
    return grads(DEQLayer(cell, backward="unroll", unroll_steps=steps), x, target)


@pytest.mark.parametrize("backward_solver", ["naive", "anderson", "broyden"])
def test_hook_gradient_equals_long_unroll(backward_solver):
    cell, x, target = problem()
    gw_ref, gx_ref, _ = oracle(cell, x, target)
    layer = DEQLayer(cell, solver="anderson", tol=1e-12, max_iter=100, backward="ift",
                     backward_solver=backward_solver, backward_tol=1e-12, backward_max_iter=200)
    gw, gx, info = grads(layer, x, target)
    assert info.backward is not None and info.backward.converged.all()
    torch.testing.assert_close(gw, gw_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(gx, gx_ref, atol=1e-6, rtol=0)


def test_float64_gradcheck_wrt_weight_and_input():
    _, x, _ = problem(batch=3, dim=6)
    w = TanhCell(6).weight.detach().clone().requires_grad_()

    def fn(x_in, w_in):
        layer = DEQLayer(TanhCell(weight=w_in), solver="broyden", tol=1e-13, max_iter=200,
                         backward_solver="anderson", backward_tol=1e-13, backward_max_iter=200)
        return layer(x_in)[0]

    assert torch.autograd.gradcheck(fn, (x.detach().clone().requires_grad_(), w), eps=1e-6, atol=1e-8)


def test_calling_the_layer_twice_before_backward_gives_correct_gradients():
    cell, x, target = problem()
    x2 = (x.detach() * 0.5 + 0.3).requires_grad_()
    layer = DEQLayer(cell, tol=1e-12, max_iter=100, backward_tol=1e-12, backward_max_iter=200)
    unroll = DEQLayer(cell, backward="unroll", unroll_steps=200)
    losses = []
    for net in (layer, unroll):
        z1, _ = net(x)
        z2, _ = net(x2)  # second call before any backward
        loss = ((z1 - target) ** 2).sum() + (z2 * target).sum()
        losses.append(torch.autograd.grad(loss, (cell.weight, x, x2)))
    for got, want in zip(*losses):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_eval_mode_still_gives_gradients_when_asked():
    cell, x, target = problem()
    layer = DEQLayer(cell, tol=1e-12, max_iter=100, backward_tol=1e-12, backward_max_iter=200)
    gw_train, gx_train, _ = grads(layer, x, target)
    layer.eval()
    gw_eval, gx_eval, info = grads(layer, x, target)
    assert info.mode == "ift"
    torch.testing.assert_close(gw_eval, gw_train)
    torch.testing.assert_close(gx_eval, gx_train)
    # A derivative w.r.t. the input only, as for forces = -dE/dx, also goes through the hook.
    (dx,) = torch.autograd.grad(layer(x)[0].sum(), x)
    (dx_ref,) = torch.autograd.grad(DEQLayer(cell, backward="unroll", unroll_steps=200)(x)[0].sum(), x)
    torch.testing.assert_close(dx, dx_ref, atol=1e-6, rtol=0)
    with torch.no_grad():
        z, info = layer(x)
    assert not z.requires_grad and info.mode == "eval"


def saved_bytes(layer, x):
    """Bytes autograd saves for backward during one forward of `layer`."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z, _ = layer(x)
    return total[0], z


def test_saved_memory_is_independent_of_solver_iterations_but_unroll_grows():
    cell, x, _ = problem()
    ift = [saved_bytes(DEQLayer(cell, max_iter=n, tol=0.0), x)[0] for n in (5, 20, 100)]
    unroll = [saved_bytes(DEQLayer(cell, backward="unroll", unroll_steps=n), x)[0] for n in (5, 20, 100)]
    assert ift[0] == ift[1] == ift[2] > 0
    assert unroll[0] < unroll[1] < unroll[2]
    per_step = (unroll[2] - unroll[1]) / 80
    assert per_step == pytest.approx((unroll[1] - unroll[0]) / 15)  # linear growth
    assert unroll[2] > 20 * ift[2]


def test_phantom_gradient_is_a_descent_direction_and_equals_k_unrolled_steps_from_z_star():
    cell, x, target = problem()
    gw_ift, _, _ = grads(DEQLayer(cell, tol=1e-12, max_iter=100, backward_tol=1e-12), x, target)
    phantom = DEQLayer(cell, tol=1e-12, max_iter=100, backward="phantom", phantom_steps=1)
    gw_1, _, _ = grads(phantom, x, target)
    assert torch.nn.functional.cosine_similarity(gw_1.flatten(), gw_ift.flatten(), dim=0) > 0.5
    # k damped steps from z* with autograd, written out by hand.
    phantom = DEQLayer(cell, tol=1e-12, max_iter=100, backward="phantom", phantom_steps=3, phantom_tau=0.7)
    gw_k, _, info = grads(phantom, x, target)
    z = info.forward.z.detach()
    for _ in range(3):
        z = 0.3 * z + 0.7 * cell(z, x)
    (gw_hand,) = torch.autograd.grad(((z - target) ** 2).sum(), cell.weight)
    torch.testing.assert_close(gw_k, gw_hand)
    # More phantom steps approach the implicit gradient.
    gw_30, _, _ = grads(DEQLayer(cell, tol=1e-12, max_iter=100, backward="phantom", phantom_steps=30),
                        x, target)
    assert (gw_30 - gw_ift).norm() < 1e-6 * gw_ift.norm() < (gw_1 - gw_ift).norm()


def test_non_contractive_cell_gives_finite_outputs_gradients_and_flags():
    cell, x, target = problem()
    with torch.no_grad():
        cell.weight.mul_(40.0)  # ||W|| = 18: naive forward and backward cannot converge
    layer = DEQLayer(cell, solver="naive", max_iter=30, backward_solver="naive", backward_max_iter=30)
    gw, gx, info = grads(layer, x, target)
    assert torch.isfinite(gw).all() and torch.isfinite(gx).all()
    assert info.forward.unconverged_frac > 0 and info.backward.unconverged_frac > 0


def test_hutchinson_penalty_is_unbiased_and_twice_differentiable():
    w = (0.3 * torch.randn(8, 8, dtype=DT)).requires_grad_()
    f = lambda z: z @ w.T  # J = W for every sample
    z = torch.zeros(20000, 8, dtype=DT)
    est = jacobian_frobenius(f, z)
    exact = (w.detach() ** 2).sum() / 8
    assert abs(est.item() - exact.item()) < 0.03 * exact.item()
    # The penalty's own gradient (a double backward) is correct.
    probe = torch.randn(3, 8, dtype=DT)
    w0 = torch.randn(8, 8, dtype=DT, requires_grad=True)
    z0 = torch.randn(3, 8, dtype=DT)
    penalty = lambda weight: jacobian_frobenius(lambda z: torch.tanh(z @ weight.T), z0, probe=probe)
    assert torch.autograd.gradcheck(penalty, (w0,))


def test_spectral_radius_of_a_linear_map():
    w = torch.diag(torch.tensor([0.9, -0.5, 0.2], dtype=DT))
    rho = spectral_radius(lambda z: z @ w.T, torch.zeros(4, 3, dtype=DT), n_iter=200)
    torch.testing.assert_close(rho, torch.full((4,), 0.9, dtype=DT), atol=1e-6, rtol=0)


def test_bad_backward_mode_is_rejected_with_the_options():
    with pytest.raises(ValueError, match="ift, phantom, unroll"):
        DEQLayer(TanhCell(), backward="adjoint")
    with pytest.raises(ValueError, match="valid deq solver names"):
        DEQLayer(TanhCell(), backward_solver="lbfgs")


def test_scalar_case_matches_the_implicit_function_theorem():
    # F(x, z) = tanh(w z + x) - z = 0 defines z*(x); the theorem gives
    # dz*/dx = -F_x / F_z = s / (1 - w s) with s = 1 - tanh^2 = 1 - z*^2, and dz*/dw = z* s / (1 - w s).
    w = torch.tensor([[0.7]], dtype=DT, requires_grad=True)
    x = torch.tensor([[0.3], [-1.2], [2.0]], dtype=DT, requires_grad=True)
    layer = DEQLayer(TanhCell(weight=w), tol=1e-14, max_iter=200, backward_tol=1e-14, backward_max_iter=200)
    z, _ = layer(x)
    dx, dw = torch.autograd.grad(z.sum(), (x, w))
    s = 1 - z.detach() ** 2
    torch.testing.assert_close(dx, s / (1 - 0.7 * s), atol=1e-12, rtol=0)
    torch.testing.assert_close(dw, (z.detach() * s / (1 - 0.7 * s)).sum().view(1, 1), atol=1e-12, rtol=0)


def test_weight_normed_cell_gets_the_implicit_gradient_in_its_direction_and_scale():
    # The solver runs without a graph inside parametrize.cached(); the cached weight must still
    # carry the graph to weight_norm's (g, v), and the hook gradient must equal the unroll's.
    from lit_papers.deq.cells import MLPCell

    torch.manual_seed(0)
    cell = MLPCell(10, groups=2, weight_norm=True).double()
    with torch.no_grad():  # shrink the scales so the cell is a contraction
        cell.first.parametrizations.weight.original0.mul_(0.3)
        cell.second.parametrizations.weight.original0.mul_(0.3)
    x = torch.randn(4, 10, dtype=DT)
    params = [p for name, p in cell.named_parameters() if "parametrizations" in name]
    assert len(params) == 4
    results = []
    for layer in (DEQLayer(cell, tol=1e-12, max_iter=200, backward_tol=1e-12, backward_max_iter=200),
                  DEQLayer(cell, backward="unroll", unroll_steps=300)):
        z, _ = layer(x)
        results.append(torch.autograd.grad((z * torch.linspace(-1, 1, 10, dtype=DT)).sum(), params))
    for got, want in zip(*results):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
