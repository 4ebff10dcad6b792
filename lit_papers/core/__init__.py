"""Shared building blocks: registries, the classifier base module, optimizers, run artifacts."""

from .classifier import ClassifierModule
from .figures import run_dir, save_figure
from .registry import Registry

__all__ = ["ClassifierModule", "Registry", "run_dir", "save_figure"]
