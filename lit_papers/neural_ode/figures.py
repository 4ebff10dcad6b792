"""Figures of the Neural ODE paper: NFE over training and NFE vs solver tolerance (Fig. 3)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def nfe_training_figure(steps: list[int], nfe_f: list[float], nfe_b: list[float], window: int = 20):
    """Per training step: (a) NFE-F and NFE-B with a moving average; (b) NFE-B against NFE-F
    coloured by step (paper Fig. 3c, 3d)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    kernel = np.ones(min(window, len(steps))) / min(window, len(steps))
    for values, label, color in ((nfe_f, "forward (NFE-F)", "C0"), (nfe_b, "backward (NFE-B)", "C1")):
        ax1.plot(steps, values, color=color, alpha=0.25, lw=0.8)
        smooth = np.convolve(values, kernel, mode="valid")
        ax1.plot(steps[len(steps) - len(smooth):], smooth, color=color, label=label)
    ax1.set(xlabel="training step", ylabel="NFE per step", title="NFE during training")
    ax1.legend()
    points = ax2.scatter(nfe_f, nfe_b, c=steps, cmap="viridis", s=8)
    top = max(max(nfe_f, default=1), max(nfe_b, default=1)) * 1.1
    ax2.plot([0, top], [0, top], "k:", lw=1, label="NFE-B = NFE-F")
    ax2.plot([0, top], [0, top / 2], "k--", lw=1, label="NFE-B = NFE-F / 2")
    ax2.set(xlabel="NFE-F", ylabel="NFE-B", title="backward vs forward")
    fig.colorbar(points, ax=ax2, label="training step")
    ax2.legend()
    fig.tight_layout()
    return fig


def nfe_tolerance_figure(rows: list[dict]):
    """rows: {tol, nfe, error, time_s}. NFE vs tolerance, error vs NFE, time vs NFE (Fig. 3a, 3b)."""
    tol = np.array([r["tol"] for r in rows])
    nfe = np.array([r["nfe"] for r in rows])
    err = np.array([r["error"] for r in rows]) * 100
    sec = np.array([r["time_s"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].semilogx(tol, nfe, "o-")
    axes[0].set(xlabel="solver tolerance (rtol = atol)", ylabel="NFE-F", title="NFE vs tolerance")
    axes[0].invert_xaxis()
    axes[1].plot(nfe, err, "o-")
    axes[1].set(xlabel="NFE-F", ylabel="validation error (%)", title="error vs NFE")
    axes[2].plot(nfe, sec, "o-")
    axes[2].set(xlabel="NFE-F", ylabel="forward time (s)", title="time vs NFE")
    for ax, t in zip(axes[1:], ([f"{x:.0e}" for x in tol],) * 2):
        for x, y, label in zip(nfe, err if ax is axes[1] else sec, t):
            ax.annotate(label, (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    fig.tight_layout()
    return fig
