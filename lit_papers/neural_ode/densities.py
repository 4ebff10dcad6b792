"""Unnormalised 2-D target densities p~(z) = exp(-U(z)) for density matching (reverse KL).

The energies U1..U4 are Rezende & Mohamed's (2015, Table 1), the test bed of the planar flow that
Chen et al. (2018, Fig. 4) compare against. U2..U4 are waves whose mass does not decay along z1
(they are not normalisable on R^2), so here they are multiplied by a N(z1; 0, 2^2) envelope; U1
decays in every direction and is used as published. ``normal`` (the standard normal, unnormalised)
is a sanity check: the identity flow matches it exactly.

Each target carries the box [-lim, lim]^2 its figures are drawn on; ``log_normalizer`` integrates
p~ over the twice larger box (which holds all but ~1e-4 of the mass), so the KL can be reported in
absolute nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lit_papers.registry import Registry


@dataclass(frozen=True)
class Target:
    """An unnormalised log-density log p~(z): (N, 2) -> (N,), and the half-width of its plotting box."""

    log_density: Callable[[torch.Tensor], torch.Tensor]
    lim: float


TARGETS = Registry("target density")


def _w1(z):
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z):
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z):
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def _bump(x, scale):
    """log of an unnormalised Gaussian bump exp(-x^2 / (2 scale^2))."""
    return -0.5 * (x / scale) ** 2


def _envelope(z):
    """log N(z1; 0, 2^2) up to a constant: makes the z1-periodic waves normalisable."""
    return _bump(z[:, 0], 2.0)


def _u1(z):  # a ring of radius 2 with two lobes at z1 = +-2
    ring = _bump(z.norm(dim=1) - 2, 0.4)
    lobes = torch.logaddexp(_bump(z[:, 0] - 2, 0.6), _bump(z[:, 0] + 2, 0.6))
    return ring + lobes


def _u2(z):  # a sine wave
    return _bump(z[:, 1] - _w1(z), 0.4) + _envelope(z)


def _u3(z):  # a wave that splits in two around z1 = 1
    return torch.logaddexp(_bump(z[:, 1] - _w1(z), 0.35), _bump(z[:, 1] - _w1(z) + _w2(z), 0.35)) + _envelope(z)


def _u4(z):  # a wave that steps down for z1 > 1
    return torch.logaddexp(_bump(z[:, 1] - _w1(z), 0.4), _bump(z[:, 1] - _w1(z) + _w3(z), 0.35)) + _envelope(z)


def _normal(z):  # the base density itself: an identity flow matches it with KL = 0
    return -0.5 * z.pow(2).sum(dim=1)


TARGETS.register("normal")(Target(_normal, lim=4.0))
TARGETS.register("u1")(Target(_u1, lim=4.0))
TARGETS.register("u2")(Target(_u2, lim=5.0))
TARGETS.register("u3")(Target(_u3, lim=5.0))
TARGETS.register("u4")(Target(_u4, lim=5.0))


def get_target(name: str) -> Target:
    """The target called ``name``; unknown names raise a ValueError listing the valid ones."""
    return TARGETS.get(name)


def grid(lim: float, size: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis (size,) over [-lim, lim] and the (size * size, 2) points, rows of the image indexed by z2."""
    side = torch.linspace(-lim, lim, size, dtype=dtype)
    points = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    return side, points


def log_normalizer(name: str, size: int = 1601) -> float:
    """log Z = log of the integral of p~ over [-2 lim, 2 lim]^2 (midpoint rule, float64)."""
    target = get_target(name)
    side, points = grid(2 * target.lim, size)
    cell = float(side[1] - side[0]) ** 2
    return float(torch.logsumexp(target.log_density(points), 0)) + math.log(cell)
