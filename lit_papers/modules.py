"""Imports every LightningModule and DataModule of the package so the CLI resolves short names.

One import line per paper package.
"""

from lit_papers.core import ClassifierModule  # noqa: F401
from lit_papers.data import (MemberLabelsDataModule, SpiralsDataModule, Toy2DDataModule,  # noqa: F401
                             VisionDataModule)
from lit_papers.generalization import RandomLabelModule  # noqa: F401
from lit_papers.lottery import LotteryPopulationModule, LotteryTicketModule  # noqa: F401
from lit_papers.core.population import PopulationModule  # noqa: F401
from lit_papers.deq import CharCorpusDataModule, DEQModule, DEQSequenceModule  # noqa: F401
from lit_papers.neural_ode import (BaseSamplesDataModule, CNFModule, DensityMatchingModule,  # noqa: F401
                                   LatentODEModule, NeuralODEModule)
from lit_papers.mode_connectivity import CurveModule, FGEModule  # noqa: F401
