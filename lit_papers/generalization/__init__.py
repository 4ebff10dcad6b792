"""Paper package: Zhang et al. (2017), "Understanding deep learning requires rethinking generalization".

`RandomLabelModule` (fitting corrupted labels or pixels), its input pipeline, the Rademacher
estimate, the finite-sample expressivity construction, minimum-norm interpolation, figures.
It imports core/, data/, models/ and the leaves (`registry.py`, `errors.py`), never another
paper package; the CLI finds its modules through `lit_papers/modules.py`.
"""

from .expressivity import TwoLayerReLUInterpolant, fit_two_layer_relu
from .min_norm import min_norm_interpolant, sgd_from_zero
from .rademacher import rademacher_from_accuracy
from .rademacher_estimate import estimate_rademacher
from .random_labels import RandomLabelModule

__all__ = ["RandomLabelModule", "TwoLayerReLUInterpolant", "estimate_rademacher", "fit_two_layer_relu",
           "min_norm_interpolant", "rademacher_from_accuracy", "sgd_from_zero"]
