"""Pruning strategies: the exact rounding recursion, nesting, magnitude order, controls."""

import math

import pytest
import torch
from torch import nn

from lit_papers.lottery import PRUNING, MaskSet, layer_rates, prunable_weights, prune, prune_count


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                         nn.ReLU(), nn.Linear(100, 10))


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 10))


def run_rounds(net, strategy, rates, rounds, seed=0):
    """IMP-like loop: fresh 'trained' weights each round, prune survivors; returns mask history."""
    weights = prunable_weights(net)
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    gen = torch.Generator().manual_seed(seed)
    history = [masks]
    for r in range(rounds):
        torch.manual_seed(100 + r)  # stands in for training: new magnitudes every round
        trained = {n: torch.randn_like(w) * m for (n, w), m in zip(weights.items(), masks.values())}
        masks = prune(strategy, trained, masks, rates, gen)
        history.append(masks)
    return history


def test_layer_rates_half_rate_output_and_no_biases():
    net = small_convnet()
    rates = layer_rates(net, 0.2, conv_rate=0.1)
    assert rates == {"0.weight": 0.1, "4.weight": 0.2, "6.weight": 0.1}
    assert layer_rates(net, 0.2, output_rate=0.0)["6.weight"] == 0.0
    assert all(name.endswith("weight") for name in prunable_weights(net))  # no bias, no BN
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        layer_rates(net, 1.5)


def test_layerwise_counts_follow_exact_rounding_recursion():
    net = lenet()
    rates = layer_rates(net, 0.2)  # fc 20 %, output 10 %
    history = run_rounds(net, "layerwise", rates, rounds=8)
    for name, w in prunable_weights(net).items():
        kept = w.numel()
        for k, masks in enumerate(history):
            assert int(masks[name].sum()) == kept, (name, k)
            kept -= math.floor(rates[name] * kept + 0.5)
        final = int(history[-1][name].sum()) / w.numel()
        p = 0.1 if name == "5.weight" else 0.2
        assert final == pytest.approx((1 - p) ** 8, abs=2e-3)


def test_masks_nested_and_magnitude_order():
    net = lenet()
    rates = layer_rates(net, 0.2)
    weights = prunable_weights(net)
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    for r in range(4):
        torch.manual_seed(r)
        trained = {n: torch.randn_like(w) * m for (n, w), m in zip(weights.items(), masks.values())}
        new = prune("layerwise", trained, masks, rates)
        for n in masks:
            assert not (new[n] & ~masks[n]).any()  # nested: nothing revived
            mag = trained[n].abs()
            newly_pruned = masks[n] & ~new[n]
            assert mag[newly_pruned].max() <= mag[new[n]].min()
            # every pruned weight (zeroed earlier or now) is <= every kept one
            assert (mag * new[n])[~new[n]].max() <= mag[new[n]].min()
        masks = new


def test_ties_are_broken_by_index_and_deterministic():
    w = {"w": torch.zeros(4, 5)}
    m = {"w": torch.ones(4, 5, dtype=torch.bool)}
    a = prune("layerwise", w, m, {"w": 0.3})
    b = prune("layerwise", w, m, {"w": 0.3})
    assert torch.equal(a["w"], b["w"])
    assert torch.equal(a["w"].flatten(), torch.arange(20) >= 6)  # lowest indices go first


def test_same_seed_same_masks():
    net = lenet()
    rates = layer_rates(net, 0.2)
    for strategy in ("layerwise", "global", "random"):
        if strategy == "global":
            rates = {n: (0.2 if n != "5.weight" else 0.0) for n in rates}
        h1 = run_rounds(net, strategy, rates, 3, seed=7)
        h2 = run_rounds(net, strategy, rates, 3, seed=7)
        assert all(torch.equal(a[n], b[n]) for a, b in zip(h1, h2) for n in a)


def test_random_pruning_keeps_layerwise_counts_but_not_positions():
    net = lenet()
    rates = layer_rates(net, 0.2)
    magnitude = run_rounds(net, "layerwise", rates, 4)
    random = run_rounds(net, "random", rates, 4, seed=1)
    other = run_rounds(net, "random", rates, 4, seed=2)
    for mm, rm, om in zip(magnitude[1:], random[1:], other[1:]):
        for n in mm:
            assert int(mm[n].sum()) == int(rm[n].sum()) == int(om[n].sum())
            assert not torch.equal(mm[n], rm[n]) and not torch.equal(rm[n], om[n])
    for old, new in zip(random, random[1:]):
        assert all(not (new[n] & ~old[n]).any() for n in old)


def test_global_pruning_pools_layers_and_skips_rate_zero():
    net = small_convnet()
    rates = {"0.weight": 0.2, "4.weight": 0.2, "6.weight": 0.0}
    history = run_rounds(net, "global", rates, 3)
    total = sum(prunable_weights(net)[n].numel() for n in ("0.weight", "4.weight"))
    kept = total
    for masks in history:
        assert int(masks["0.weight"].sum()) + int(masks["4.weight"].sum()) == kept
        assert bool(masks["6.weight"].all())
        kept -= prune_count(kept, 0.2)
    # one threshold across layers: every pruned magnitude <= every kept magnitude
    weights = {n: torch.randn_like(w) for n, w in prunable_weights(net).items()}
    ones = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    new = prune("global", weights, ones, rates)
    pruned = torch.cat([weights[n].abs()[~new[n]] for n in ("0.weight", "4.weight")])
    kept_mag = torch.cat([weights[n].abs()[new[n]] for n in ("0.weight", "4.weight")])
    assert pruned.max() <= kept_mag.min()
    with pytest.raises(ValueError, match="one rate"):
        prune("global", weights, ones, {"0.weight": 0.1, "4.weight": 0.2, "6.weight": 0.0})


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="global, layerwise, random"):
        PRUNING.get("magnitude")


def test_maskset_density_and_buffers_roundtrip():
    net = lenet()
    ms = MaskSet(prunable_weights(net))
    assert ms.density() == 1.0
    new = prune("layerwise", prunable_weights(net), ms.as_dict(), layer_rates(net, 0.2))
    ms.load_(new)
    counts = ms.kept_counts()
    assert counts == {"1.weight": 188160, "3.weight": 24000, "5.weight": 900}
    other = MaskSet(prunable_weights(net))
    other.load_state_dict(ms.state_dict())
    assert other.kept_counts() == counts
    assert ms.density() == pytest.approx(sum(counts.values()) / 266200)
