"""Lottery tickets (Frankle & Carbin, 2019): exact masks, pruning strategies, IMP module, the
whole study (seeds x controls) as one population."""

from .masks import MaskSet, layer_rates, prunable_weights
from .module import LotteryTicketModule
from .population import LotteryPopulationModule
from .pruning import PRUNING, prune, prune_count

__all__ = ["LotteryPopulationModule", "LotteryTicketModule", "MaskSet", "PRUNING", "layer_rates",
           "prunable_weights", "prune", "prune_count"]
