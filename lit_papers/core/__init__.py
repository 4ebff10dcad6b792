"""Shared building blocks: registries, the classifier base module, optimizers, run artifacts."""

from .classifier import ClassifierModule
from .figures import run_dir, save_figure

__all__ = ["ClassifierModule", "run_dir", "save_figure"]
