"""Density-matching figures: a target density next to learned densities q, on the target's box."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .densities import get_target, grid


@torch.no_grad()
def grid_densities(target: str, log_q, size: int = 100, chunk: int = 5000):
    """Axis (size,), target density p~/max and q on the target's box, both (size, size), rows indexed by z2.

    ``log_q`` maps float32 points (N, 2) to log q (N,) (called in chunks; a CNF solves per chunk).
    """
    t = get_target(target)
    side, points = grid(t.lim, size)
    log_p = t.log_density(points)
    p = (log_p - log_p.max()).exp().view(size, size)
    q = None
    if log_q is not None:
        q = torch.cat([log_q(c.float()).double().exp() for c in points.split(chunk)]).view(size, size)
    return side, p, q


def draw_density(ax, side: torch.Tensor, density: torch.Tensor, title: str = "") -> None:
    lim = (float(side[0]), float(side[-1]))
    ax.imshow(density.cpu().numpy(), origin="lower", extent=(*lim, *lim), cmap="magma")
    ax.set(xlim=lim, ylim=lim, aspect="equal", title=title)
    ax.set_xticks([])
    ax.set_yticks([])


def matching_figure(side, p, q, samples: torch.Tensor, title: str):
    """Target p~, learned q and samples x ~ q: one row of three panels."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.7))
    draw_density(axes[0], side, p, "target p~")
    draw_density(axes[1], side, q, f"learned q ({title})")
    lim = (float(side[0]), float(side[-1]))
    axes[2].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4, color="C1")
    axes[2].set(xlim=lim, ylim=lim, aspect="equal", title="samples x ~ q")
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    fig.tight_layout()
    return fig
