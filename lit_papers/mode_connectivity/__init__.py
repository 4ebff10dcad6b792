"""Paper package: loss-surface mode connectivity and Fast Geometric Ensembling (Garipov et al. 2018).

Curves between two trained nets (registry in curves.py), BN statistics on the curve, curve
evaluation and planes, `CurveModule` and its `curve` settings (settings.py); cyclic schedules and
`FGEModule`; figures.
It imports core/, data/, models/ and the leaves (`registry.py`, `errors.py`), never another
paper package; the CLI finds its modules through `lit_papers/modules.py`.
"""

from .curve_module import CurveModule
from .fge_module import FGEModule

__all__ = ["CurveModule", "FGEModule"]
