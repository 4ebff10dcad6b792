"""Paper package: deep equilibrium models (Bai, Kolter, Koltun 2019).

Its cells (conv, multiscale, mlp, transformer) with their stems and heads, the root finders
(registry in solvers.py), the implicit backward, the settings groups (settings.py), `DEQLayer`,
`DEQNet` and the explicit weight-tied baseline, `DEQModule` and the sequence model `DEQSequenceModule`.
It imports core/, data/, models/ and the leaves (`registry.py`, `errors.py`), never another
paper package; the CLI finds its modules through `lit_papers/modules.py`.
"""

from lit_papers.deq.anderson import anderson
from lit_papers.deq.broyden import broyden
from lit_papers.deq.cells import DEQ_CELLS, build_cell
from lit_papers.deq.implicit import BACKWARD_MODES, implicit_output, phantom_output, unrolled_output
from lit_papers.deq.jacobian import jacobian_frobenius, spectral_radius
from lit_papers.deq.layer import DEQInfo, DEQLayer
from lit_papers.deq.module import DEQModule
from lit_papers.deq.network import DEQNet
from lit_papers.deq.parts import build_parts
from lit_papers.deq.sequence import CharCorpusDataModule, DEQSequenceModule
from lit_papers.deq.settings import Backward, JacobianPenalty, Solver, layer_kwargs
from lit_papers.deq.single_layer import ImplicitMLP, mlp_as_implicit_layer
from lit_papers.deq.solvers import SOLVERS, SolverResult, naive, solve
from lit_papers.deq.weight_tied import WeightTiedNet

__all__ = [
    "BACKWARD_MODES", "Backward", "CharCorpusDataModule", "DEQ_CELLS", "DEQInfo", "DEQLayer", "DEQModule", "DEQNet",
    "DEQSequenceModule", "ImplicitMLP", "JacobianPenalty", "SOLVERS", "Solver", "SolverResult", "WeightTiedNet",
    "anderson", "broyden", "build_cell", "build_parts", "implicit_output", "jacobian_frobenius", "layer_kwargs",
    "mlp_as_implicit_layer", "naive", "phantom_output", "solve", "spectral_radius", "unrolled_output",
]
