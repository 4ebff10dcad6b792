"""Plain nn.Modules (no Lightning), built by name through `build_model`."""

from . import convnet, mlp  # noqa: F401  (registration side effects)
from .registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
