"""The paper's figures: loss/error along the curve vs the segment, and the loss plane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def curve_figure(paths: Mapping[str, Mapping[str, np.ndarray]], curve_name: str = "bezier"):
    """Train NLL, train loss (NLL + L2, the objective) and test error against t, for each path."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    styles = {"curve": dict(color="C0", label=f"{curve_name} curve"),
              "segment": dict(color="C3", ls="--", label="segment")}
    panels = (("train_nll", "train NLL", True), ("train_loss", "train loss (NLL + L2)", True),
              ("test_err", "test error (%)", False))
    for ax, (key, label, log) in zip(axes, panels):
        for name, path in paths.items():
            ax.plot(path["t"], path[key], **styles.get(name, {"label": name}))
        ax.set(xlabel="t", ylabel=label, title=f"{label} along the path")
        if log and min(float(p[key].min()) for p in paths.values()) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plane_figure(grid: Mapping[str, np.ndarray], curve_xy: Sequence[tuple[float, float]],
                 points_xy: Sequence[tuple[float, float]], curve_name: str = "bezier"):
    """Train loss (log-spaced contours) and test error on the plane through (w_0, bend, w_1),
    with the projected curve, the segment, the endpoints and the bend."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    cx, cy = zip(*curve_xy)
    (x0, y0), (xb, yb), (x1, y1) = points_xy
    panels = (("train_loss", "train loss (NLL + L2)", True), ("test_err", "test error (%)", False))
    for ax, (key, label, log) in zip(axes, panels):
        values = np.clip(grid[key], 1e-4, None) if log else grid[key]
        lo, hi = float(values.min()), float(values.max())
        if log and hi > lo:
            cs = ax.contourf(grid["x"], grid["y"], values, levels=np.geomspace(lo, hi, 20), norm=LogNorm(),
                             cmap="viridis")
        else:
            cs = ax.contourf(grid["x"], grid["y"], values, levels=20, cmap="viridis")
        fig.colorbar(cs, ax=ax, label=label, format="%.3g")
        ax.plot(cx, cy, color="white", lw=2, label=f"{curve_name} curve")
        ax.plot([x0, x1], [y0, y1], color="red", ls="--", lw=1.5, label="segment")
        ax.scatter([x0, x1], [y0, y1], color="black", zorder=3, label="endpoints")
        ax.scatter([xb], [yb], color="orange", marker="x", zorder=3, label="bend")
        ax.set(xlabel="u (towards w_1)", ylabel="v (towards the bend)", title=f"{label} on the plane")
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def ensemble_figure(history: Sequence[Mapping[str, float]], schedule: str = "fge",
                    single: Mapping[str, float] | None = None):
    """Test accuracy and NLL of each member and of the ensemble of the first k members, against k;
    `single` (fge/single_acc, fge/single_nll) adds the equal-budget single network as a line."""
    fig, (ax_acc, ax_nll) = plt.subplots(1, 2, figsize=(10, 3.8))
    k = [int(h["fge/members"]) for h in history]
    ax_acc.plot(k, [100 * h["fge/ensemble_acc"] for h in history], "o-", label=f"{schedule} ensemble")
    ax_acc.plot(k, [100 * h["fge/member_acc"] for h in history], "s--", label="member k")
    ax_nll.plot(k, [h["fge/ensemble_nll"] for h in history], "o-", label=f"{schedule} ensemble")
    ax_nll.plot(k, [h["fge/member_nll"] for h in history], "s--", label="member k")
    if single:
        ax_acc.axhline(100 * single["fge/single_acc"], color="k", ls=":", label="single net, same budget")
        ax_nll.axhline(single["fge/single_nll"], color="k", ls=":", label="single net, same budget")
    ax_acc.set(xlabel="members", ylabel="test accuracy (%)", title="accuracy")
    ax_nll.set(xlabel="members", ylabel="test NLL", title="NLL")
    for ax in (ax_acc, ax_nll):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def lr_figure(curves: Mapping[str, Sequence[float]], snapshots: Sequence[int], per_epoch: int,
              pretrain_epochs: int, schedule: str = "fge"):
    """The learning rate of every optimizer step (`curves`: name -> LRs), with the steps after which
    the members were taken (`snapshots`: optimizer steps taken at each snapshot) and the end of
    pretraining marked; the x axis in epochs."""
    fig, ax = plt.subplots(figsize=(10, 3.2))
    styles = {"fge": dict(color="C0", label=f"{schedule} network"),
              "single": dict(color="k", ls=":", label="single net, same budget")}
    for name, lrs in curves.items():
        epochs = (np.arange(len(lrs)) + 1) / per_epoch
        ax.plot(epochs, lrs, lw=1, **styles.get(name, dict(label=name)))
    lrs = np.asarray(curves["fge"])
    taken = [s for s in snapshots if 0 < s <= len(lrs)]
    if taken:
        ax.scatter(np.asarray(taken) / per_epoch, lrs[np.asarray(taken) - 1], color="C3", zorder=3,
                   label="snapshot (member)")
    if pretrain_epochs:
        ax.axvline(pretrain_epochs, color="gray", ls="--", lw=0.8, label="cycling starts")
    ax.set(xlabel="epoch", ylabel="learning rate", title="learning rate per optimizer step")
    if min(min(v) for v in curves.values() if len(v)) > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
