"""Lottery tickets (Frankle & Carbin, 2019): exact masks, pruning strategies, IMP module."""

from .masks import MaskSet, layer_rates, prunable_weights
from .module import LotteryTicketModule
from .pruning import PRUNING, prune, prune_count

__all__ = ["LotteryTicketModule", "MaskSet", "PRUNING", "layer_rates", "prunable_weights", "prune",
           "prune_count"]
