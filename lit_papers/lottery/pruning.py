"""Pruning strategies, picked by name from ``PRUNING``.

A strategy maps (weights, current masks, per-layer rates, generator) to new masks. Every round
removes a fraction of the *surviving* weights, so masks are nested and the density after k
rounds at rate p is ~(1-p)^k. The exact per-layer recursion is

    kept_{k+1} = kept_k - prune_count(kept_k, p),   prune_count(n, p) = floor(p * n + 1/2)

(round half up). Among surviving weights the smallest scores go first; ties are broken by flat
index (stable sort), so the same weights always give the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from lit_papers.registry import Registry

PRUNING = Registry("pruning strategy")


def prune_count(n_alive: int, rate: float) -> int:
    """How many of ``n_alive`` surviving weights one round at ``rate`` removes."""
    return math.floor(rate * n_alive + 0.5)


def prune_lowest(scores: Tensor, mask: Tensor, n_prune: int) -> Tensor:
    """New mask: ``mask`` minus the ``n_prune`` surviving entries of lowest score.

    Args:
        scores: same shape as ``mask``; only surviving entries are compared.
        mask: bool, True = kept.
        n_prune: number of surviving entries to remove (0 <= n_prune <= mask.sum()).
    """
    n_dead = int((~mask).sum())
    if not 0 <= n_prune <= mask.numel() - n_dead:
        raise ValueError(f"cannot prune {n_prune} of {mask.numel() - n_dead} surviving weights")
    # dead entries sort first (-inf), so the first n_dead + n_prune indices are the new mask's zeros
    flat = scores.detach().flatten().float().masked_fill(~mask.flatten(), -math.inf)
    order = torch.argsort(flat, stable=True)
    new = mask.clone().flatten()
    new[order[: n_dead + n_prune]] = False
    return new.view_as(mask)


def _check(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
           rates: Mapping[str, float]) -> None:
    if not set(weights) == set(masks) == set(rates):
        raise ValueError("weights, masks and rates must name the same layers: "
                         f"{sorted(weights)} / {sorted(masks)} / {sorted(rates)}")


@PRUNING.register("layerwise")
def layerwise_magnitude(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                        rates: Mapping[str, float], generator: torch.Generator | None = None
                        ) -> dict[str, Tensor]:
    """Per layer, prune ``rates[layer]`` of the survivors with the smallest |w|."""
    _check(weights, masks, rates)
    return {name: prune_lowest(weights[name].abs(), m, prune_count(int(m.sum()), rates[name]))
            for name, m in masks.items()}


@PRUNING.register("global")
def global_magnitude(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                     rates: Mapping[str, float], generator: torch.Generator | None = None
                     ) -> dict[str, Tensor]:
    """Pool every layer with a non-zero rate and prune that fraction of all their survivors.

    Layers with rate 0 (e.g. the output layer of VGG/ResNet in the paper) are left untouched.
    All non-zero rates must be equal, since one global threshold is used.
    """
    _check(weights, masks, rates)
    pooled = [name for name in masks if rates[name] > 0]
    if len({rates[name] for name in pooled}) > 1:
        raise ValueError("global pruning needs one rate for all pruned layers, got "
                         f"{ {name: rates[name] for name in pooled} }; set conv/output rates "
                         "equal to the main rate (or 0 to exclude a layer)")
    new = {name: m.clone() for name, m in masks.items()}
    if not pooled:
        return new
    # one flat vector over the pooled layers: (sum_l numel_l,)
    scores = torch.cat([weights[n].detach().abs().flatten().float() for n in pooled])
    mask = torch.cat([masks[n].flatten() for n in pooled])
    flat = prune_lowest(scores, mask, prune_count(int(mask.sum()), rates[pooled[0]]))
    for name, piece in zip(pooled, torch.split(flat, [masks[n].numel() for n in pooled])):
        new[name] = piece.view_as(masks[name])
    return new


@PRUNING.register("random")
def random_pruning(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                   rates: Mapping[str, float], generator: torch.Generator | None = None
                   ) -> dict[str, Tensor]:
    """Prune uniformly random survivors, with the same per-layer counts as ``layerwise``."""
    _check(weights, masks, rates)
    counts = {name: prune_count(int(m.sum()), rates[name]) for name, m in masks.items()}
    return prune_random_counts(masks, counts, generator)


def prune_random_counts(masks: Mapping[str, Tensor], n_prune: Mapping[str, int],
                        generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Remove ``n_prune[layer]`` uniformly random survivors from each layer's mask."""
    new = {}
    for name, m in masks.items():
        # random scores drawn on the CPU generator so the result is device independent
        scores = torch.rand(m.shape, generator=generator).to(m.device)
        new[name] = prune_lowest(scores, m, n_prune[name])
    return new


def prune(strategy: str, weights: Mapping[str, Tensor], masks: Mapping[str, Tensor],
          rates: Mapping[str, float], generator: torch.Generator | None = None
          ) -> dict[str, Tensor]:
    """Apply the strategy named ``strategy`` (see ``PRUNING.names()``)."""
    return PRUNING.get(strategy)(weights, masks, rates, generator)
