"""Exact BatchNorm recompute, curve evaluation summaries and the plane basis."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lit_papers.mode_connectivity.batchnorm import recompute_bn
from lit_papers.mode_connectivity.curves import CurveNet, flatten
from lit_papers.mode_connectivity.evaluation import evaluate_path, summarize
from lit_papers.mode_connectivity.plane import evaluate_plane, flat_points, plane_basis, plane_grid


def _bn_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _batches(n=50, sizes=(16, 16, 11, 7)):
    torch.manual_seed(0)
    x, y = 2 + 3 * torch.randn(n, 1, 6, 6), torch.randint(0, 3, (n,))
    out, i = [], 0
    for s in sizes:
        out.append((x[i:i + s], y[i:i + s]))
        i += s
    return x[:i], y[:i], out


def test_recompute_equals_exact_dataset_statistics():
    net = _bn_net(0)
    x, _, batches = _batches()
    net[1].momentum = 0.3
    net.train()
    recompute_bn(net, net, batches)
    conv_out = net[0](x)  # the first BN's input over the whole data set
    torch.testing.assert_close(net[1].running_mean, conv_out.mean((0, 2, 3)))
    torch.testing.assert_close(net[1].running_var, conv_out.var((0, 2, 3), unbiased=True))
    # Second BN: inputs computed with the first BN in batch mode, as in training, and dropout off.
    feats = []
    net.eval()
    for xb, _ in batches:
        h = net[0](xb)
        h = torch.relu((h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            h.var((0, 2, 3), unbiased=False, keepdim=True) + net[1].eps) * net[1].weight.view(1, -1, 1, 1)
            + net[1].bias.view(1, -1, 1, 1))
        feats.append(net[5](net[4](h)))
    feats = torch.cat(feats)
    torch.testing.assert_close(net[6].running_mean, feats.mean(0))
    torch.testing.assert_close(net[6].running_var, feats.var(0, unbiased=True))
    assert net[1].momentum == 0.3 and not net.training  # momentum and mode restored
    mean = net[1].running_mean.clone()
    net.train()
    recompute_bn(net, net, batches)  # idempotent
    torch.testing.assert_close(net[1].running_mean, mean)
    assert net.training


@pytest.mark.parametrize("t,endpoint", [(0.0, 0), (1.0, 1)])
def test_curve_logits_match_endpoint_logits_with_batchnorm_after_recompute(t, endpoint):
    a, b = _bn_net(1), _bn_net(2)
    curve = CurveNet(_bn_net(3), curve="bezier", num_bends=1)
    curve.set_point(0, dict(a.named_parameters()))
    curve.set_point(-1, dict(b.named_parameters()))
    for p in curve.bend_parameters():
        p.data.normal_()
    x, _, batches = _batches()
    ref = (a, b)[endpoint]
    recompute_bn(ref, ref, batches)
    recompute_bn(curve.net, lambda xb: curve(xb, t), batches)
    ref.eval()
    curve.eval()
    torch.testing.assert_close(curve(x, t), ref(x), atol=1e-6, rtol=0)


def test_summaries_and_barrier():
    values = np.array([1.0, 3.0, 2.0])
    dl = np.array([0.0, 1.0, 3.0])
    s = summarize(values, dl)
    assert s["max"] == 3.0 and s["min"] == 1.0 and s["mean"] == 2.0
    assert s["barrier"] == 3.0 - 1.5
    assert s["integral"] == pytest.approx((2.0 * 1 + 2.5 * 3) / 4)


def test_evaluate_path_recomputes_bn_and_matches_endpoints():
    a = _bn_net(1)
    curve = CurveNet(_bn_net(3), curve="bezier", num_bends=1)
    curve.set_point(0, dict(a.named_parameters()))
    curve.set_point(-1, dict(_bn_net(2).named_parameters()))
    curve.init_linear()
    _, _, batches = _batches()
    path = evaluate_path(curve.net, curve.weights, [0.0, 0.5, 1.0], batches, batches[:2], weight_decay=0.1)
    recompute_bn(a, a, batches)
    a.eval()
    nll = sum(nn.functional.cross_entropy(a(x), y, reduction="sum").item() for x, y in batches) / 50
    assert path["train_nll"][0] == pytest.approx(nll, rel=1e-5)
    l2 = sum(float((p.detach() ** 2).sum()) for p in a.parameters())
    assert path["train_loss"][0] == pytest.approx(nll + 0.05 * l2, rel=1e-5)
    w0, w1 = flatten(curve.weights(0.0)), flatten(curve.weights(1.0))
    assert path["dl"].sum() == pytest.approx(torch.linalg.vector_norm(w1 - w0).item(), rel=1e-5)


def test_plane_basis_is_orthonormal_and_places_the_points():
    torch.manual_seed(0)
    w0, w1, w2 = torch.randn(50), torch.randn(50), torch.randn(50)
    basis = plane_basis(w0, w1, w2)
    assert basis.u @ basis.u == pytest.approx(1.0)
    assert basis.v @ basis.v == pytest.approx(1.0)
    assert abs(float(basis.u @ basis.v)) < 1e-12
    assert basis.project(w0) == pytest.approx((0.0, 0.0), abs=1e-12)
    length = torch.linalg.vector_norm(w2.double() - w0.double()).item()
    assert basis.project(w2) == pytest.approx((length, 0.0), abs=1e-9)
    x1, y1 = basis.project(w1)
    assert y1 > 0
    torch.testing.assert_close(basis.point(x1, y1).float(), w1)  # w1 lies in its own plane
    xs, ys = plane_grid(basis, [w0, w1, w2], points=5, margin=0.2)
    assert xs[0] < 0 < xs[-1] and ys[0] < 0 and ys[-1] > y1
    with pytest.raises(ValueError, match="collinear"):
        plane_basis(w0, 0.5 * (w0 + w2), w2)


def test_plane_grid_values_at_the_anchor_points_are_those_networks_losses():
    """The plane's grid point at w_0's and w_2's coordinates evaluates those very networks
    (exact BatchNorm statistics included), with the L2 term of the training objective."""
    nets = [_bn_net(s) for s in (1, 2, 3)]
    params = [dict(n.named_parameters()) for n in nets]
    w0, w1, w2 = flat_points(params)
    basis = plane_basis(w0, w1, w2)
    length = torch.linalg.vector_norm(w2.double() - w0.double()).item()
    _, _, batches = _batches()
    wd = 0.1
    grid = evaluate_plane(nets[0], params[0], basis, np.array([0.0, length]), np.array([0.0]), batches,
                          batches[:2], weight_decay=wd)
    assert grid["train_loss"].shape == (1, 2)
    for j, net in ((0, nets[0]), (1, nets[2])):
        net = copy.deepcopy(net)
        recompute_bn(net, net, batches)
        net.eval()
        nll = sum(nn.functional.cross_entropy(net(x), y, reduction="sum").item() for x, y in batches) / 50
        l2 = sum(float((p.detach().double() ** 2).sum()) for p in net.parameters())
        assert grid["train_loss"][0, j] == pytest.approx(nll + 0.5 * wd * l2, rel=1e-4)
        test_err = 100 * (1 - sum((net(x).argmax(1) == y).sum().item() for x, y in batches[:2]) / 32)
        assert grid["test_err"][0, j] == pytest.approx(test_err)
