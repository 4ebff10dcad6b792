"""The 2D plane through three weight vectors and the loss surface over it (paper Fig. 1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .curves import flatten, unflatten
from .evaluation import Batches, evaluate_weights


@dataclass
class PlaneBasis:
    """Orthonormal basis (u, v) of the plane through w0, w1, w2 with origin w0.

    u points from w0 to w2; v is w1 - w0 with its u-component removed. In these coordinates
    w0 = (0, 0), w2 = (||w2 - w0||, 0) and w1 has a positive y.
    """

    origin: Tensor  # (D,)
    u: Tensor  # (D,) unit
    v: Tensor  # (D,) unit, orthogonal to u

    def project(self, w: Tensor) -> tuple[float, float]:
        """Coordinates of the orthogonal projection of the flat vector `w` onto the plane."""
        d = w.double() - self.origin
        return float(d @ self.u), float(d @ self.v)

    def point(self, x: float, y: float) -> Tensor:
        """The flat weight vector at plane coordinates (x, y)."""
        return self.origin + x * self.u + y * self.v


def plane_basis(w0: Tensor, w1: Tensor, w2: Tensor) -> PlaneBasis:
    """Basis of the plane through three flat weight vectors (w1 is typically the curve's bend)."""
    w0, w1, w2 = w0.double(), w1.double(), w2.double()
    u = w2 - w0
    u_norm = torch.linalg.vector_norm(u)
    if u_norm == 0:
        raise ValueError("w0 and w2 coincide: the plane is undefined")
    u = u / u_norm
    v = (w1 - w0) - ((w1 - w0) @ u) * u
    v_norm = torch.linalg.vector_norm(v)
    if v_norm <= 1e-6 * max(float(u_norm), float(torch.linalg.vector_norm(w1 - w0))):  # relative: round-off
        raise ValueError("the three weight vectors are collinear: the plane is undefined "
                         "(train the curve first, or pass a bend that is off the segment)")
    return PlaneBasis(origin=w0, u=u, v=v / v_norm)


def plane_grid(basis: PlaneBasis, anchors: list[Tensor], points: int = 21,
               margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates of a `points` x `points` grid covering the projected `anchors` plus a
    relative `margin` on every side."""
    coords = np.array([basis.project(w) for w in anchors])  # (A, 2)
    lo, hi = coords.min(0), coords.max(0)
    span = np.maximum(hi - lo, 1e-12)
    xs = np.linspace(lo[0] - margin * span[0], hi[0] + margin * span[0], points)
    ys = np.linspace(lo[1] - margin * span[1], hi[1] + margin * span[1], points)
    return xs, ys


@torch.no_grad()
def evaluate_plane(net: nn.Module, like: Mapping[str, Tensor], basis: PlaneBasis, xs: np.ndarray,
                   ys: np.ndarray, train: Batches, test: Batches, weight_decay: float = 0.0) -> dict:
    """Train loss (NLL + 0.5 wd ||w||^2), train error, test NLL and test error at every grid point.

    `like` gives parameter names, shapes, dtype and device. Returns arrays of shape (len(ys), len(xs)).
    """
    shape = (len(ys), len(xs))
    grids = {k: np.zeros(shape) for k in ("train_loss", "train_err", "test_nll", "test_err")}
    ref = next(iter(like.values()))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            flat = basis.point(float(x), float(y)).to(ref.dtype)
            weights = {n: w.to(ref.device) for n, w in unflatten(flat, like).items()}
            result = evaluate_weights(net, weights, {"train": train, "test": test}, bn_data=train)
            tr, te = result["train"], result["test"]
            grids["train_loss"][i, j] = tr["nll"] + 0.5 * weight_decay * float(flat.double().pow(2).sum())
            grids["train_err"][i, j] = tr["err"]
            grids["test_nll"][i, j] = te["nll"]
            grids["test_err"][i, j] = te["err"]
    return {"x": xs, "y": ys, **grids}


def flat_points(points: list[Mapping[str, Tensor]]) -> list[Tensor]:
    """Flatten a list of parameter dicts (detached)."""
    return [flatten({n: w.detach() for n, w in p.items()}) for p in points]
