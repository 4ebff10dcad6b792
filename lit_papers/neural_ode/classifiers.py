"""The four image classifiers of Chen et al. 2018, Table 1, on one footing.

ResNet, RK-Net and ODE-Net share the downsampling stem and the head; they differ
only in the middle: L residual blocks (ResNet), one ODE solve differentiated
through the solver's operations (RK-Net), or one ODE solve differentiated by the
adjoint method (ODE-Net). The MLP baseline is a one-hidden-layer net on pixels.

The convolutions follow the input: images (C, H, W) get Conv2d, 1D signals (C, L)
such as MNIST-1D get Conv1d, with the same layers, kernels and strides.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lit_papers.models import MODELS
from lit_papers.neural_ode.dynamics import ConvDynamics, ResidualStack, conv_class
from lit_papers.neural_ode.odeblock import ODEBlock

#: global average pooling by number of spatial dimensions
POOLS: dict[int, type[nn.Module]] = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


def spatial_dims(input_shape) -> int:
    """1 for signals (C, L), 2 for images (C, H, W); other shapes are refused."""
    dims = len(input_shape) - 1
    conv_class(dims)  # raises for unsupported shapes
    return dims


def downsampling_stem(in_ch: int, channels: int, dims: int = 2) -> nn.Sequential:
    """(N, in_ch, *S) -> (N, channels, ~S/4): one conv and two stride-2 convs (S: H, W or L)."""
    conv = conv_class(dims)
    return nn.Sequential(
        conv(in_ch, channels, 3, 1),
        _gn(channels), nn.ReLU(),
        conv(channels, channels, 4, 2, 1),
        _gn(channels), nn.ReLU(),
        conv(channels, channels, 4, 2, 1),
    )


def classifier_head(channels: int, num_classes: int, dims: int = 2) -> nn.Sequential:
    """(N, channels, *s) -> (N, num_classes) logits via global average pooling."""
    return nn.Sequential(
        _gn(channels), nn.ReLU(), POOLS[dims](1), nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


class FeatureClassifier(nn.Module):
    """stem -> middle (residual stack or ODE block) -> head."""

    def __init__(self, stem: nn.Module, middle: nn.Module, head: nn.Module):
        super().__init__()
        self.stem, self.middle, self.head = stem, middle, head

    @property
    def ode_block(self) -> ODEBlock | None:
        """The ODE block when the middle is one (for NFE logging), else None."""
        return self.middle if isinstance(self.middle, ODEBlock) else None

    def forward(self, x):
        return self.head(self.middle(self.stem(x)))


def _mlp(input_shape, num_classes, hidden: int = 300, **_) -> nn.Module:
    in_features = 1
    for d in input_shape:
        in_features *= d
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def _resnet(input_shape, num_classes, channels: int = 64, depth: int = 6, **_) -> nn.Module:
    # Autonomous branches: a ResNet block does not see its depth index.
    dims = spatial_dims(input_shape)
    blocks = [ConvDynamics(channels, time_dependent=False, dims=dims) for _ in range(depth)]
    middle = ResidualStack(blocks, depth)
    return FeatureClassifier(
        downsampling_stem(input_shape[0], channels, dims), middle, classifier_head(channels, num_classes, dims)
    )


def _ode_classifier(adjoint: bool) -> Callable[..., nn.Module]:
    def factory(input_shape, num_classes, channels: int = 64, **solver) -> nn.Module:
        solver.pop("depth", None)
        solver.pop("hidden", None)
        dims = spatial_dims(input_shape)
        middle = ODEBlock(ConvDynamics(channels, dims=dims), adjoint=adjoint, **solver)
        return FeatureClassifier(
            downsampling_stem(input_shape[0], channels, dims), middle,
            classifier_head(channels, num_classes, dims),
        )

    return factory


# Methods as data: Table 1's model families by name.
VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "resnet": _resnet,
    "rknet": _ode_classifier(adjoint=False),
    "odenet": _ode_classifier(adjoint=True),
}


for _name, _factory in VARIANTS.items():
    # Also buildable by name through lit_papers.models.build_model("node_<variant>", ...).
    MODELS.register(f"node_{_name}")(_factory)


def build_classifier(variant: str, input_shape, num_classes: int, **kwargs) -> nn.Module:
    """Build one of Table 1's models.

    Args:
        variant: ``mlp`` | ``resnet`` | ``rknet`` | ``odenet``.
        input_shape: (C, H, W) of images or (C, L) of 1D signals (Conv2d or Conv1d layers).
        num_classes: number of output logits.
        **kwargs: ``hidden`` (mlp), ``channels`` and ``depth`` (resnet), ``channels`` and the
            ``ODEBlock`` solver arguments (rknet/odenet); arguments another variant uses are ignored.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown Neural ODE variant {variant!r}; valid variants: {sorted(VARIANTS)}")
    return VARIANTS[variant](tuple(input_shape), num_classes, **kwargs)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
