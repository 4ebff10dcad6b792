"""The CNF density figure: data, learned density, samples drawn by integrating backwards."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch


def density_figure(data: torch.Tensor, side: torch.Tensor, density: torch.Tensor, samples: torch.Tensor):
    """data, samples: (N, 2); side: (G,) grid axis; density: (G, G) with rows indexed by y."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.7))
    lim = (float(side[0]), float(side[-1]))
    axes[0].scatter(data[:, 0], data[:, 1], s=1, alpha=0.5)
    axes[0].set_title("data")
    axes[1].imshow(density.numpy(), origin="lower", extent=(*lim, *lim), cmap="magma")
    axes[1].set_title("learned density p(x)")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5, color="C1")
    axes[2].set_title("samples (z ~ N(0, I) flowed T -> 0)")
    for ax in axes:
        ax.set(xlim=lim, ylim=lim, aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
