"""Paper package: lottery tickets (Frankle & Carbin, 2019).

Exact masks, pruning strategies (registry in pruning.py), the level plan, `IMP` (imp.py:
iterative magnitude pruning of K members, written once), the Lightning modules that run it,
`LotteryTicketModule` (one network) and `LotteryPopulationModule` (the whole study, seeds x
controls, as one population), reports.
It imports core/, data/, models/ and the leaves (`registry.py`, `errors.py`), never another
paper package; the CLI finds its modules through `lit_papers/modules.py`.
"""

from .masks import MaskSet, layer_rates, prunable_weights
from .module import LotteryTicketModule
from .population import LotteryPopulationModule
from .pruning import PRUNING, prune, prune_count

__all__ = ["LotteryPopulationModule", "LotteryTicketModule", "MaskSet", "PRUNING", "layer_rates",
           "prunable_weights", "prune", "prune_count"]
