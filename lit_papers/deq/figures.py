"""The DEQ paper's diagnostic plots: residual per solver iteration, solver work over training."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .solvers import SolverResult  # noqa: E402


def residual_curve(result: SolverResult) -> torch.Tensor:
    """Median over samples of the relative residual at each iteration (frozen samples keep their last)."""
    trace = result.trace.clone()  # (T, B), NaN once a sample has stopped
    for t in range(1, trace.shape[0]):
        trace[t] = torch.where(torch.isnan(trace[t]), trace[t - 1], trace[t])
    return trace.median(dim=1).values


def residual_figure(results: dict[str, SolverResult], title: str = ""):
    """Relative residual ||f(z) - z|| / ||f(z)|| against the number of f evaluations, one line per solver."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, result in results.items():
        curve = residual_curve(result).cpu().float()
        ax.semilogy(range(len(curve)), curve, marker=".", label=f"{name} ({result.nfe} evals)")
    ax.set_xlabel("f evaluations")
    ax.set_ylabel("median relative residual")
    ax.set_title(title or "forward solve at the trained cell")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def iterations_figure(history: dict[str, list[float]]):
    """Solver iterations (and the forward residual) per training step."""
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps = history["step"]
    ax.plot(steps, history["fwd_iters"], label="forward")
    if any(v == v for v in history["bwd_iters"]):  # not all NaN
        ax.plot(steps, history["bwd_iters"], label="backward")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean solver iterations")
    ax.legend()
    ax.grid(True, alpha=0.3)
    ax_res.semilogy(steps, history["fwd_residual"])
    ax_res.set_xlabel("training step")
    ax_res.set_ylabel("mean forward relative residual")
    ax_res.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
