"""Identities of the curve parametrisation (Garipov et al. 2018, Sec. 3)."""

import math

import pytest
import torch
from torch import nn

from lit_papers.mode_connectivity.curves import CURVES, CurveNet, l2_penalty, linear_weights


def _mlp(seed, batch_norm=False):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(12, 16)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Linear(16, 3)]
    return nn.Sequential(*layers)


def _curve(curve="bezier", num_bends=1, batch_norm=False):
    a, b = _mlp(1, batch_norm), _mlp(2, batch_norm)
    net = CurveNet(_mlp(3, batch_norm), curve=curve, num_bends=num_bends)
    net.set_point(0, dict(a.named_parameters()))
    net.set_point(-1, dict(b.named_parameters()))
    return net, a, b


@pytest.mark.parametrize("name", ["bezier", "polychain"])
@pytest.mark.parametrize("num_points", [2, 3, 4, 6])
def test_coefficients_sum_to_one_and_are_nonnegative(name, num_points):
    for t in torch.linspace(0, 1, 23):
        c = CURVES.get(name)(t, num_points)
        assert c.shape == (num_points,)
        assert torch.all(c >= 0)
        assert math.isclose(c.sum().item(), 1.0, abs_tol=1e-12)


def test_bezier_matches_closed_form_for_one_bend():
    for t in (0.0, 0.13, 0.5, 0.77, 1.0):
        c = CURVES.get("bezier")(t, 3)
        expected = torch.tensor([(1 - t) ** 2, 2 * t * (1 - t), t**2], dtype=torch.float64)
        torch.testing.assert_close(c, expected)


def test_coefficients_are_one_hot_at_the_endpoints():
    for name in ("bezier", "polychain"):
        for n in (3, 5):
            assert CURVES.get(name)(0.0, n).tolist() == [1.0] + [0.0] * (n - 1)
            assert CURVES.get(name)(1.0, n).tolist() == [0.0] * (n - 1) + [1.0]


def test_polychain_hits_every_bend_at_its_knot():
    net, _, _ = _curve("polychain", num_bends=3)
    for p in net.bend_parameters():
        p.data.normal_()
    for k in range(5):
        w = net.weights(k / 4)
        for name, value in net.point(k).items():
            assert torch.equal(w[name], value), (k, name)


def test_polychain_passes_through_the_bend_at_half():
    net, _, _ = _curve("polychain", num_bends=1)
    for p in net.bend_parameters():
        p.data.normal_()
    w = net.weights(0.5)
    for name, value in net.point(1).items():
        assert torch.equal(w[name], value)


@pytest.mark.parametrize("curve,num_bends", [("bezier", 1), ("bezier", 3), ("polychain", 1), ("segment", 0)])
def test_curve_equals_endpoints_exactly_at_0_and_1(curve, num_bends):
    net, a, b = _curve(curve, num_bends)
    for p in net.bend_parameters():
        p.data.normal_()
    for t, ref in ((0.0, a), (1.0, b)):
        w = net.weights(t)
        for name, value in ref.named_parameters():
            assert torch.equal(w[name], value)
        x = torch.randn(7, 12)
        assert torch.equal(net(x, t), ref(x))


@pytest.mark.parametrize("curve,num_bends", [("bezier", 1), ("bezier", 2), ("bezier", 4), ("polychain", 1),
                                             ("polychain", 3)])
def test_fresh_curve_with_bends_on_the_segment_is_the_line(curve, num_bends):
    net, a, b = _curve(curve, num_bends)
    net.init_linear()
    start, end = dict(a.named_parameters()), dict(b.named_parameters())
    for t in torch.linspace(0, 1, 17).tolist():
        w, line = net.weights(t), linear_weights(start, end, t)
        for name in w:
            torch.testing.assert_close(w[name], line[name], atol=1e-6, rtol=0)


def test_only_bends_get_gradients_and_weight_decay_is_on_phi_t():
    net, _, _ = _curve("bezier", num_bends=2)
    net.init_linear()
    x, y = torch.randn(9, 12), torch.randint(0, 3, (9,))
    t, wd = 0.3, 1e-2
    w = net.weights(t)
    loss = nn.functional.cross_entropy(net(x, t), y) + 0.5 * wd * l2_penalty(w)
    loss.backward()
    for k in (0, 3):
        assert all(p.grad is None and not p.requires_grad for p in net.points[k].values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.bend_parameters())
    hand = sum(float((v.detach() ** 2).sum()) for v in w.values())
    assert math.isclose(l2_penalty(w).item(), hand, rel_tol=1e-6)
    # The decay acts on phi(t), not on each control point: d/dw_k [wd/2 ||phi(t)||^2] = wd c_k(t) phi(t)
    # (decaying the bends themselves would give wd w_k instead).
    for p in net.bend_parameters():
        p.grad = None
    (0.5 * wd * l2_penalty(net.weights(t))).backward()
    c = net.coefficients(t)
    for k in (1, 2):
        for name, phi in w.items():
            expected = wd * float(c[k]) * phi.detach()
            torch.testing.assert_close(net.point(k)[name].grad, expected, atol=1e-7, rtol=1e-5)


def test_training_moves_bends_and_keeps_endpoints():
    net, a, b = _curve("bezier", num_bends=1)
    net.init_linear()
    before = [p.detach().clone() for p in net.bend_parameters()]
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    torch.manual_seed(0)
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    for _ in range(10):
        t = torch.rand(()).item()
        loss = nn.functional.cross_entropy(net(x, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, value in a.named_parameters():
        assert torch.equal(net.point(0)[name], value)
    for name, value in b.named_parameters():
        assert torch.equal(net.point(-1)[name], value)
    assert all(not torch.equal(p0, p) for p0, p in zip(before, net.bend_parameters()))


def test_bad_names_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="bezier"):
        CurveNet(_mlp(0), curve="spline")
    with pytest.raises(ValueError, match="num_bends=0"):
        CurveNet(_mlp(0), curve="segment", num_bends=1)
    net = CurveNet(_mlp(0))
    with pytest.raises(ValueError, match="arch"):
        net.set_point(0, {"1.weight": torch.zeros(3, 3)})


def test_export_gives_a_plain_net_at_t():
    net, _, _ = _curve("bezier", num_bends=1)
    for p in net.bend_parameters():
        p.data.normal_()
    x = torch.randn(5, 12)
    torch.testing.assert_close(net.export(0.4)(x), net(x, 0.4))
