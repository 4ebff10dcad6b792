"""Model registry: every architecture is built as `factory(input_shape, num_classes, **kwargs)`."""

from __future__ import annotations

import inspect

from torch import nn

from lit_papers.registry import Registry

MODELS = Registry("model")


def model_options(name: str) -> str:
    """The keyword arguments model `name` takes (its `arch_kwargs`), comma-separated."""
    params = inspect.signature(MODELS.get(name)).parameters
    return ", ".join(n for n in params if n not in ("input_shape", "num_classes"))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Build the registered architecture `name` for inputs of shape (C, H, W) and `num_classes` outputs."""
    factory = MODELS.get(name)
    try:
        return factory(tuple(input_shape), int(num_classes), **kwargs)
    except TypeError as err:
        raise TypeError(f"model {name!r} rejected its arguments {sorted(kwargs)}: {err}. "
                        f"{name} takes: {model_options(name) or 'no arguments'} "
                        "(set them in model.arch_kwargs)") from None
