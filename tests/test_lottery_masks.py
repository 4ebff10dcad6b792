"""Exact masks: pruned weights stay exactly 0.0 through every optimizer and through save/load."""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.core.optim import build_optimizer
from lit_papers.lottery import MaskSet, layer_rates, prunable_weights, prune
from lit_papers.lottery.snapshots import fresh_init, reset_to_, snapshot

OPTIMIZERS = {
    "sgd_momentum": dict(name="sgd", lr=0.1, momentum=0.9),
    "sgd_nesterov_wd": dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": dict(name="adam", lr=1e-2),
    "adam_wd": dict(name="adam", lr=1e-2, weight_decay=1e-3),
    "adamw": dict(name="adamw", lr=1e-2, weight_decay=1e-2),
}


def make_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 5))


def pruned_setup(seed=0):
    net = make_net(seed)
    weights = prunable_weights(net)
    masks = MaskSet(weights)
    masks.load_(prune("layerwise", weights, masks.as_dict(), layer_rates(net, 0.5)))
    masks.apply_to_weights_(weights)
    return net, weights, masks


def train(net, opt, masks, weights, steps, mask_grads=True, remask=True):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 20, generator=gen), torch.randint(0, 5, (16,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        if mask_grads:
            masks.apply_to_grads_(weights)
        opt.step()
        if remask:
            masks.apply_to_weights_(weights)


def all_pruned_zero(masks, weights):
    return all(bool((weights[n][~m] == 0.0).all()) for n, m in masks.items())


@pytest.mark.parametrize("cfg", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_gradient_masking_alone_keeps_pruned_weights_exactly_zero(cfg):
    # masking gradients before the step is already exact: the post-step re-mask is insurance
    net, weights, masks = pruned_setup()
    opt = build_optimizer(cfg["name"], net.parameters(), **{k: v for k, v in cfg.items() if k != "name"})
    train(net, opt, masks, weights, 25, mask_grads=True, remask=False)
    assert all_pruned_zero(masks, weights)
    for n, m in masks.items():  # optimizer state at pruned positions is untouched zero
        for v in opt.state[weights[n]].values():
            if torch.is_tensor(v) and v.shape == m.shape:
                assert bool((v[~m] == 0).all())


@pytest.mark.parametrize("cfg", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_forward_only_masking_would_revive_weights(cfg):
    # the failure the masks guard against: without gradient masking pruned weights move
    net, weights, masks = pruned_setup()
    opt = build_optimizer(cfg["name"], net.parameters(), **{k: v for k, v in cfg.items() if k != "name"})
    train(net, opt, masks, weights, 5, mask_grads=False, remask=False)
    assert not all_pruned_zero(masks, weights)


@pytest.mark.parametrize("cfg", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_pruned_zero_after_save_and_resume(cfg):
    net, weights, masks = pruned_setup()
    kw = {k: v for k, v in cfg.items() if k != "name"}
    opt = build_optimizer(cfg["name"], net.parameters(), **kw)
    train(net, opt, masks, weights, 5)
    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "masks": masks.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    net2 = make_net(seed=3)  # different init: everything must come from the checkpoint
    w2 = prunable_weights(net2)
    m2 = MaskSet(w2)
    net2.load_state_dict(ckpt["net"])
    m2.load_state_dict(ckpt["masks"])
    opt2 = build_optimizer(cfg["name"], net2.parameters(), **kw)
    opt2.load_state_dict(ckpt["opt"])
    assert all_pruned_zero(m2, w2)
    train(net2, opt2, m2, w2, 10)
    assert all_pruned_zero(m2, w2)
    assert m2.kept_counts() == masks.kept_counts()


def test_optimizer_state_masking():
    net, weights, masks = pruned_setup()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    full = MaskSet(weights)  # all ones: train densely to fill the moments everywhere
    train(net, opt, full, weights, 3)
    masks.apply_to_optimizer_state_(opt, weights)
    for n, m in masks.items():
        assert bool((opt.state[weights[n]]["exp_avg"][~m] == 0).all())
        assert bool((opt.state[weights[n]]["exp_avg"][m] != 0).any())


def test_reset_survivors_bit_identical_including_biases_and_bn():
    net = make_net()
    theta0 = snapshot(net)
    weights = prunable_weights(net)
    masks = MaskSet(weights)
    train(net, torch.optim.SGD(net.parameters(), lr=0.1), masks, weights, 5)
    masks.load_(prune("layerwise", weights, masks.as_dict(), layer_rates(net, 0.3)))
    reset_to_(net, theta0, masks)
    for name, value in net.state_dict().items():
        if name.replace(".", "__") in dict(masks.named_buffers()):
            m = masks[name]
            assert torch.equal(value[m], theta0[name][m]) and bool((value[~m] == 0).all())
        else:  # biases, BN affine and running statistics: exactly theta0
            assert torch.equal(value, theta0[name]), name


def test_fresh_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    def build():
        return nn.Sequential(nn.Linear(20, 32), nn.Linear(32, 5))

    a, b, c = fresh_init(build, 5), fresh_init(build, 5), fresh_init(build, 6)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
