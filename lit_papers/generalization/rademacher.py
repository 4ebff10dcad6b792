"""Rademacher complexity from the accuracy of a fit to random labels (Sec. 2.2).

For binary h: X -> {-1, +1} and signs sigma_i, (1/n) sum_i sigma_i h(x_i) = 1 - 2 err(h), so
R_n(H) = E_sigma sup_h (1/n) sum_i sigma_i h(x_i) = E_sigma [1 - 2 min_h err]. Training a net on
uniformly random labels approximates the sup from below. For K classes we report the analogous
chance-corrected accuracy (acc - 1/K) / (1 - 1/K), which equals 1 - 2 err for K = 2: 1 means
the class fits every labelling (the bound is vacuous), 0 means it does no better than chance.
`rademacher_estimate.py` trains the nets that give the accuracy.
"""

from __future__ import annotations


def rademacher_from_accuracy(acc: float, num_classes: int) -> float:
    """Chance-corrected training accuracy on random labels: (acc - 1/K) / (1 - 1/K)."""
    chance = 1.0 / num_classes
    return (acc - chance) / (1.0 - chance)
