"""Plain nn.Modules shared by the papers (no Lightning), built by name through `build_model`.

MLPs and LeNet, conv nets (Conv-2/4/6, AlexNet- and Inception-small), VGG, ResNet and PreResNet,
the MNIST-1D nets, each registered in `MODELS` (registry.py) when imported here. It imports only
the leaves. A paper's own nets live in its folder and register themselves when that package is
imported (`deq` and `weight_tied` from lit_papers/deq/).
"""

from . import convnet, mlp  # noqa: F401  (registration side effects)
from . import alexnet_small  # noqa: F401
from . import inception_small  # noqa: F401
from . import convnets_lottery  # noqa: F401
from . import resnet_cifar  # noqa: F401
from . import vgg  # noqa: F401
from . import preresnet  # noqa: F401
from . import mnist1d_nets  # noqa: F401
from .registry import MODELS, build_model, model_options

__all__ = ["MODELS", "build_model", "model_options"]
