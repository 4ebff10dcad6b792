"""Forward root finders: agreement, speed, per-sample stopping, best iterate, no crash on bad input."""

from __future__ import annotations

import pytest
import torch

from lit_papers.deq import SOLVERS, solve

NAMES = ("naive", "anderson", "broyden")


def slow_contraction(dim=40, batch=6, top=0.95, seed=0):
    """f(z) = W z + x with symmetric W, eigenvalues in [-0.5, top]: naive converges like top^k."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    w = q @ torch.diag(torch.linspace(-0.5, top, dim, dtype=torch.float64)) @ q.T
    x = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - w, x.T).T  # (I - W)^-1 x
    return (lambda z: z @ w.T + x), x, exact


def test_all_solvers_reach_the_same_fixed_point_and_accelerated_ones_need_fewer_evaluations():
    f, x, exact = slow_contraction()
    results = {name: solve(name, f, torch.zeros_like(x), max_iter=2000, tol=1e-10) for name in NAMES}
    for name, res in results.items():
        assert res.converged.all(), name
        torch.testing.assert_close(res.z, exact, atol=1e-7, rtol=0)
    assert results["anderson"].nfe < results["naive"].nfe / 2
    assert results["broyden"].nfe < results["naive"].nfe / 2


def test_nonlinear_solvers_agree_on_a_tanh_cell():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(30, 30, generator=gen, dtype=torch.float64)
    w = 0.9 * w / torch.linalg.matrix_norm(w, 2)
    x = torch.randn(5, 2, 3, 5, generator=gen, dtype=torch.float64)  # any state shape works
    f = lambda z: torch.tanh(z.flatten(1) @ w.T + x.flatten(1)).view_as(z)
    zs = [solve(name, f, torch.zeros_like(x), max_iter=500, tol=1e-11).z for name in NAMES]
    for z in zs:
        assert z.shape == x.shape
        torch.testing.assert_close(f(z), z, atol=1e-9, rtol=0)
        torch.testing.assert_close(z, zs[0], atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_per_sample_stopping_freezes_converged_samples(name):
    # Sample 0 is already at its fixed point (x = 0 -> z* = 0): it must stop after 0 steps
    # while the others keep iterating, and its iterate must not move.
    f, x, _ = slow_contraction()
    x[0] = 0.0
    res = solve(name, f, torch.zeros_like(x), max_iter=2000, tol=1e-8)
    assert res.nstep[0] == 0 and res.nstep[1:].min() > 5
    assert torch.equal(res.z[0], torch.zeros_like(res.z[0]))
    assert res.trace.shape == (res.nfe, x.shape[0]) and torch.isnan(res.trace[1:, 0]).all()


def test_lowest_residual_iterate_is_returned_when_iteration_oscillates():
    # f(z) = -z + 2x: naive iteration from z0 = 0 cycles 0 -> 2x -> 0 ... with residual 2|x|
    # everywhere except the unreachable z* = x; the first iterate must be returned, not the last.
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    f = lambda z: -z + 2 * x
    res = solve("naive", f, torch.zeros_like(x), max_iter=7, tol=1e-6)
    assert not res.converged.any() and res.nstep.item() == 7
    torch.testing.assert_close(res.abs_residual, (2 * x).norm(dim=1))
    assert torch.isfinite(res.z).all()
    # Anderson solves this linear map exactly at its second step.
    res = solve("anderson", f, torch.zeros_like(x), max_iter=7, tol=1e-10)
    assert res.converged.all()
    torch.testing.assert_close(res.z, x)


@pytest.mark.parametrize("name", NAMES)
def test_map_without_fixed_point_gives_finite_output_and_a_flag(name):
    # g(z) = f(z) - z = 1 + z^2 > 0 has no root; naive iteration overflows float32.
    x = torch.ones(4, 8)
    f = lambda z: z + 1.0 + z * z
    res = solve(name, f, torch.zeros_like(x), max_iter=200, tol=1e-6)
    assert torch.isfinite(res.z).all()
    assert not res.converged.any() and res.unconverged_frac == 1.0
    if name == "naive":
        assert res.diverged.all()


def test_singular_anderson_system_falls_back_instead_of_raising():
    # f(z) = z + c has no fixed point and makes every residual equal to c: with lam = 0 the
    # mixing system [[0, 1^T], [1, G G^T]] is singular from the second step on.
    c = torch.ones(3, 5)
    res = solve("anderson", lambda z: z + c, torch.zeros_like(c), max_iter=10, tol=1e-6, lam=0.0)
    assert res.fallbacks > 0
    assert torch.isfinite(res.z).all() and not res.converged.any()


def test_non_finite_cell_output_is_flagged_not_raised():
    x = torch.randn(4, 6)
    f = lambda z: torch.where(z.abs() > 0.5, torch.full_like(z, float("nan")), 0.9 * z + x)
    for name in NAMES:
        res = solve(name, f, torch.zeros_like(x), max_iter=20)
        assert torch.isfinite(res.z).all() and res.diverged.any(), name


def test_broyden_memory_cap_still_converges():
    f, x, exact = slow_contraction()
    res = solve("broyden", f, torch.zeros_like(x), max_iter=2000, tol=1e-10, memory=5)
    assert res.converged.all()
    torch.testing.assert_close(res.z, exact, atol=1e-7, rtol=0)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="anderson, broyden, naive"):
        SOLVERS.get("newton")
    with pytest.raises(ValueError, match="stop_mode"):
        solve("naive", lambda z: z, torch.zeros(1, 2), stop_mode="relative")
