"""Neural ODEs (Chen et al. 2018): ODE block, Table 1 classifiers, continuous normalizing flows."""

from lit_papers.neural_ode.module import NeuralODEModule
from lit_papers.neural_ode.cnf_module import CNFModule
from lit_papers.neural_ode.latent_ode import LatentODE, LatentODEModule
from lit_papers.neural_ode.classifiers import VARIANTS, build_classifier, count_parameters
from lit_papers.neural_ode.cnf import CNF, CNFDynamics, TimeConcatMLP, standard_normal_logprob
from lit_papers.neural_ode.dynamics import ConvDynamics, ResidualStack
from lit_papers.neural_ode.odeblock import SOLVERS, ODEBlock, ODESolverError
from lit_papers.neural_ode.planar import PlanarField

__all__ = [
    "CNF", "CNFDynamics", "CNFModule", "ConvDynamics", "NeuralODEModule", "ODEBlock", "ODESolverError",
    "LatentODE", "LatentODEModule", "PlanarField", "ResidualStack",
    "SOLVERS", "TimeConcatMLP", "VARIANTS", "build_classifier", "count_parameters",
    "standard_normal_logprob",
]
