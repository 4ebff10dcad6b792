"""Paper package: neural ODEs (Chen et al. 2018).

The ODE block (solvers, adjoint), the Table 1 classifiers and `NeuralODEModule`, continuous
normalizing flows (`CNFModule`), density matching (planar flows, `DensityMatchingModule`), the
latent ODE and its RNN baseline (`LatentODEModule`); `ODESolve` is their `model.ode` settings.
It imports core/, data/, models/ and the leaves (`registry.py`, `errors.py`), never another
paper package; the CLI finds its modules through `lit_papers/modules.py`.
"""

from lit_papers.neural_ode.module import NeuralODEModule
from lit_papers.neural_ode.cnf_module import CNFModule
from lit_papers.neural_ode.density_matching import DensityMatchingModule
from lit_papers.neural_ode.base_samples import BaseSamplesDataModule
from lit_papers.neural_ode.latent_ode import LatentODE, LatentODEModule
from lit_papers.neural_ode.classifiers import VARIANTS, build_classifier, count_parameters
from lit_papers.neural_ode.cnf import CNF, CNFDynamics, TimeConcatMLP, standard_normal_logprob
from lit_papers.neural_ode.dynamics import ConvDynamics, ResidualStack
from lit_papers.neural_ode.odeblock import SOLVERS, ODEBlock, ODESolverError
from lit_papers.neural_ode.settings import ODESolve
from lit_papers.neural_ode.planar import PlanarField
from lit_papers.neural_ode.planar_flow import PlanarFlow, PlanarLayer
from lit_papers.neural_ode.densities import TARGETS

__all__ = [
    "BaseSamplesDataModule", "CNF", "CNFDynamics", "CNFModule", "ConvDynamics", "DensityMatchingModule",
    "NeuralODEModule", "ODEBlock", "ODESolve", "ODESolverError",
    "LatentODE", "LatentODEModule", "PlanarField", "PlanarFlow", "PlanarLayer", "ResidualStack",
    "SOLVERS", "TARGETS", "TimeConcatMLP", "VARIANTS", "build_classifier", "count_parameters",
    "standard_normal_logprob",
]
