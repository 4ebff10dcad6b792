"""Plain nn.Modules (no Lightning), built by name through `build_model`."""

from . import convnet, mlp  # noqa: F401  (registration side effects)
from . import alexnet_small  # noqa: F401
from . import inception_small  # noqa: F401
from . import convnets_lottery  # noqa: F401
from . import resnet_cifar  # noqa: F401
from . import vgg  # noqa: F401
from . import preresnet  # noqa: F401
from . import mnist1d_nets  # noqa: F401
from .registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
