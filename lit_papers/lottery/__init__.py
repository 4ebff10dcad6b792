"""Lottery tickets (Frankle & Carbin, 2019): exact masks, pruning strategies, IMP module."""

from .masks import MaskSet, layer_rates, prunable_weights
from .pruning import PRUNING, prune, prune_count

__all__ = ["MaskSet", "PRUNING", "layer_rates", "prunable_weights", "prune", "prune_count"]
