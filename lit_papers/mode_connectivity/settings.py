"""`Curve`: the settings group saying which curve `CurveModule` trains and between which two networks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from lit_papers.core.settings import Group

from .curves import CURVES


@dataclass(frozen=True)
class Curve(Group):
    """The curve of `CurveModule`: `model.curve`.

    Args:
        kind: the family phi(t) belongs to: `bezier`, `polychain` or `segment` (the straight line,
            which has no bends).
        num_bends: trainable control points between the two endpoints (0 for `segment`).
        endpoints: two checkpoints to connect (runs of `ClassifierModule`, or plain state dicts);
            every epoch then trains the curve. None: both endpoints are trained in the same fit.
        endpoint_epochs: epochs per endpoint when `endpoints` is None: w_0 first, then w_1, then the
            curve gets the rest of `trainer.max_epochs`.
        endpoint_seeds: the two different initialisation seeds of w_0 and w_1.
        endpoint_lr: learning rate of the endpoint epochs (default: `optim.lr`).
    """

    kind: str = "bezier"
    num_bends: int = 1
    endpoints: Optional[list[str]] = None
    endpoint_epochs: int = 10
    endpoint_seeds: Sequence[int] = (1, 2)
    endpoint_lr: Optional[float] = None

    def __post_init__(self):
        CURVES.get(self.kind)  # fail fast on the name, listing the valid ones
        if self.num_bends < 0:
            raise ValueError(f"curve.num_bends must be >= 0, got {self.num_bends}")
        if self.kind == "segment" and self.num_bends != 0:
            raise ValueError(f"curve.kind segment has no bends: set curve.num_bends=0 (got {self.num_bends})")
        if self.endpoints is not None:
            if len(self.endpoints) != 2:
                raise ValueError(f"curve.endpoints must list exactly two checkpoints, got {len(self.endpoints)}")
            object.__setattr__(self, "endpoints", [str(p) for p in self.endpoints])
        if self.endpoint_epochs < 0:
            raise ValueError(f"curve.endpoint_epochs must be >= 0, got {self.endpoint_epochs}")
        seeds = tuple(int(s) for s in self.endpoint_seeds)
        if len(seeds) != 2 or seeds[0] == seeds[1]:
            raise ValueError(f"curve.endpoint_seeds must be two different seeds, got {list(seeds)}")
        object.__setattr__(self, "endpoint_seeds", seeds)
        if self.endpoint_lr is not None and not self.endpoint_lr > 0:
            raise ValueError(f"curve.endpoint_lr must be positive, got {self.endpoint_lr}")

    @property
    def trained_endpoint_epochs(self) -> int:
        """Epochs per endpoint trained in the fit: 0 when `endpoints` are loaded."""
        return 0 if self.endpoints is not None else self.endpoint_epochs
