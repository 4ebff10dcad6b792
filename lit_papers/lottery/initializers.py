"""Weight initialisations by name. The paper draws theta_0 from a Gaussian Glorot distribution."""

from __future__ import annotations

from torch import nn

from lit_papers.registry import Registry

from .masks import PRUNABLE_LAYERS

INITIALIZERS = Registry("weight_init")


@INITIALIZERS.register("default")
def keep_default(net: nn.Module) -> None:
    """Leave the architecture's own initialisation."""


@INITIALIZERS.register("glorot_normal")
def glorot_normal(net: nn.Module) -> None:
    """Glorot (Xavier) normal weights and zero biases on every Linear/Conv layer."""
    for layer in net.modules():
        if isinstance(layer, PRUNABLE_LAYERS):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


@INITIALIZERS.register("kaiming_normal")
def kaiming_normal(net: nn.Module) -> None:
    """He normal (fan_in, ReLU) weights and zero biases on every Linear/Conv layer."""
    for layer in net.modules():
        if isinstance(layer, PRUNABLE_LAYERS):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
