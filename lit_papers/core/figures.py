"""Figures: saved as PNG in the run folder and logged as W&B images when W&B is attached."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs happen on clusters and CI

import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, WandbLogger  # noqa: E402


def _trainer_of(obj) -> Trainer | None:
    if isinstance(obj, Trainer):
        return obj
    try:  # a LightningModule (its .trainer raises when it is not attached to one)
        return getattr(obj, "trainer", None)
    except RuntimeError:
        return None


def run_dir(trainer_or_module) -> Path | None:
    """The run folder `runs/<experiment>/<version>/` of a trainer or module, or None without a CSV logger."""
    trainer = _trainer_of(trainer_or_module)
    if trainer is None:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            return Path(logger.log_dir)
    return None


def write_figure(fig, path: str | Path) -> Path:
    """Save `fig` as the PNG `path` (its folder created), close it; the reports' `--out`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def save_figure(trainer_or_module, fig, name: str) -> Path | None:
    """Save `fig` as `<run dir>/figures/<name>.png`, log it to W&B, close it; return the path."""
    trainer = _trainer_of(trainer_or_module)
    folder = run_dir(trainer) if trainer is not None else None
    path = None
    if folder is not None and trainer.is_global_zero:
        path = folder / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"figures/{name}", images=[str(path)])
    plt.close(fig)
    return path
