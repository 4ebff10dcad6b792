"""Loss-surface mode connectivity and Fast Geometric Ensembling (Garipov et al. 2018)."""

from .curve_module import CurveModule
from .fge_module import FGEModule

__all__ = ["CurveModule", "FGEModule"]
