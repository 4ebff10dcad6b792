"""Curves in weight space over any nn.Module (Garipov et al. 2018, Sec. 3).

A curve phi(t), t in [0, 1], is a weighted sum of control points w_0..w_{n-1}, each a full
set of the network's parameters: phi(t) = sum_k c_k(t) w_k. w_0 and w_{n-1} are the two
trained endpoints; the points in between ("bends") are trained. The network itself is run
with `torch.func.functional_call`, so any architecture works unchanged: no curve layers.

Curve types are data: `CURVES.get("bezier")` returns the coefficient function
c(t, num_points) -> Tensor[num_points] whose entries are non-negative and sum to 1.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lit_papers.registry import Registry

CURVES = Registry("curve")


def _as_t(t: float | Tensor) -> Tensor:
    # Coefficients are computed in float64 so that c(0) and c(1) are exactly one-hot.
    return torch.as_tensor(t, dtype=torch.float64).reshape(())


@CURVES.register("bezier")
def bezier(t: float | Tensor, num_points: int) -> Tensor:
    """Bernstein basis of degree n-1: c_k(t) = C(n-1, k) t^k (1-t)^(n-1-k)."""
    t = _as_t(t)
    n = num_points - 1
    k = torch.arange(num_points, dtype=torch.float64)
    binom = torch.tensor([math.comb(n, i) for i in range(num_points)], dtype=torch.float64)
    return binom * t**k * (1 - t) ** (n - k)  # torch defines 0**0 = 1: one-hot at t = 0 and 1


@CURVES.register("polychain")
def polychain(t: float | Tensor, num_points: int) -> Tensor:
    """Piecewise-linear hats: the broken line through w_0..w_{n-1}, w_k reached at t = k/(n-1)."""
    t = _as_t(t)
    k = torch.arange(num_points, dtype=torch.float64)
    return torch.clamp(1 - torch.abs(t * (num_points - 1) - k), min=0.0)


@CURVES.register("segment")
def segment(t: float | Tensor, num_points: int) -> Tensor:
    """The straight line (1-t) w_0 + t w_1; it has no bends."""
    if num_points != 2:
        raise ValueError(f"the segment curve has no bends; use num_bends=0 (got {num_points - 2})")
    t = _as_t(t)
    return torch.stack([1 - t, t])


def _key(name: str) -> str:
    # ParameterDict keys may not contain dots.
    return name.replace(".", "__")


class CurveNet(nn.Module):
    """A curve phi(t) through the parameters of `net`, with `num_bends` trainable bends.

    Args:
        net: the architecture; its own parameters are ignored (frozen), its buffers (BatchNorm
            running statistics) are shared by every t and must be recomputed per t
            (`lit_papers.mode_connectivity.batchnorm.recompute_bn`).
        curve: a name in CURVES (bezier, polychain, segment).
        num_bends: number of control points between the endpoints (0 for the segment).
        fix_endpoints: endpoints get no gradient (the paper's setting).

    `forward(x, t)` runs the network at phi(t); `weights(t)` returns phi(t) as a name->tensor dict.
    """

    def __init__(self, net: nn.Module, curve: str = "bezier", num_bends: int = 1, fix_endpoints: bool = True):
        super().__init__()
        if num_bends < 0:
            raise ValueError(f"num_bends must be >= 0, got {num_bends}")
        self.curve = curve
        self.coefficient_fn = CURVES.get(curve)
        self.num_points = num_bends + 2
        self.coefficient_fn(0.0, self.num_points)  # fail early on an invalid curve/bend combination
        self.net = net
        self.net.requires_grad_(False)
        self.names = [name for name, _ in net.named_parameters()]
        # points[k][key] is control point k of parameter `name`; all start as copies of net's weights.
        self.points = nn.ModuleList(
            nn.ParameterDict({_key(n): nn.Parameter(p.detach().clone()) for n, p in net.named_parameters()})
            for _ in range(self.num_points)
        )
        self.fix_endpoints = fix_endpoints
        self.freeze_endpoints(fix_endpoints)

    # ---- control points ---------------------------------------------------------------
    def point(self, k: int) -> dict[str, Tensor]:
        """Control point k as a name -> tensor dict (k = 0 and -1 are the endpoints)."""
        return {n: self.points[k][_key(n)] for n in self.names}

    def bend_parameters(self) -> list[nn.Parameter]:
        return [p for k in range(1, self.num_points - 1) for p in self.points[k].values()]

    def freeze_endpoints(self, frozen: bool = True) -> None:
        for k in (0, self.num_points - 1):
            for p in self.points[k].values():
                p.requires_grad_(not frozen)

    @torch.no_grad()
    def set_point(self, k: int, weights: Mapping[str, Tensor]) -> None:
        """Copy a parameter dict (e.g. an endpoint's state dict) into control point k, by name."""
        missing = [n for n in self.names if n not in weights]
        if missing:
            raise ValueError(f"weights for control point {k} miss parameters {missing[:5]}; "
                             "the checkpoint's architecture must match the curve's `arch`")
        for n in self.names:
            target = self.points[k][_key(n)]
            if weights[n].shape != target.shape:
                raise ValueError(f"parameter {n}: shape {tuple(weights[n].shape)} does not match the "
                                 f"architecture's {tuple(target.shape)}; check `arch`/`arch_kwargs`")
            target.copy_(weights[n])

    @torch.no_grad()
    def init_linear(self) -> None:
        """Place bend k on the segment at k/(n-1): a fresh curve is then the straight line for every
        curve type (Bernstein and hat bases reproduce linear functions exactly)."""
        last = self.num_points - 1
        for k in range(1, last):
            a = k / last
            for n in self.names:
                start, end = self.points[0][_key(n)], self.points[last][_key(n)]
                self.points[k][_key(n)].copy_((1 - a) * start + a * end)

    # ---- the curve ----------------------------------------------------------------------
    def coefficients(self, t: float | Tensor) -> Tensor:
        return self.coefficient_fn(t, self.num_points)

    def weights(self, t: float | Tensor) -> dict[str, Tensor]:
        """phi(t) = sum_k c_k(t) w_k, differentiable in the control points."""
        coeffs = self.coefficients(t).tolist()
        out = {}
        for n in self.names:
            # Zero coefficients are skipped and 1.0 * w is exact, so phi(0) and phi(1) are
            # bit-identical to the endpoints.
            terms = [c * self.points[k][_key(n)] for k, c in enumerate(coeffs) if c != 0.0]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            out[n] = total
        return out

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        return functional_call(self.net, self.weights(t), (x,))

    def export(self, t: float | Tensor) -> nn.Module:
        """A plain copy of the network carrying phi(t) (recompute its BatchNorm statistics before use)."""
        net = copy.deepcopy(self.net)
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(self.weights(t)[n])
        return net.requires_grad_(True)


def linear_weights(start: Mapping[str, Tensor], end: Mapping[str, Tensor], t: float) -> dict[str, Tensor]:
    """The segment (1-t) w_0 + t w_1 between two parameter dicts (the baseline of every curve)."""
    if t == 0.0:
        return dict(start)
    if t == 1.0:
        return dict(end)
    return {n: (1 - t) * start[n] + t * end[n] for n in start}


def l2_penalty(weights: Mapping[str, Tensor]) -> Tensor:
    """sum ||w||^2 over all parameters (the curve objective's weight decay is 0.5 * wd * this)."""
    return sum((w * w).sum() for w in weights.values())


def flatten(weights: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a parameter dict into one vector, in the dict's order."""
    return torch.cat([w.reshape(-1) for w in weights.values()])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of `flatten`: split `vector` into tensors shaped like `like`'s."""
    out, i = {}, 0
    for n, w in like.items():
        out[n] = vector[i:i + w.numel()].view_as(w)
        i += w.numel()
    if i != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the parameters {i}")
    return out
