"""DataModules and raw datasets shared by the papers.

Vision sets (torchvision, the embedded digits and mnist5k, mnist1d) behind `VisionDataModule`,
Zhang et al.'s corruptions, per-member labels for populations, toy 2-D densities, spirals, the
device-resident loader and the resumable epoch shuffle. It imports only the leaves
(`lit_papers/registry.py`, `lit_papers/errors.py`).
"""

from .datasets import DATASETS, load_dataset
from .device_loader import DeviceBatches
from .member_labels import MemberLabelsDataModule
from .spirals import SpiralsDataModule
from .toy2d import Toy2DDataModule
from .vision import VisionDataModule

__all__ = ["DATASETS", "DeviceBatches", "MemberLabelsDataModule", "SpiralsDataModule", "Toy2DDataModule",
           "VisionDataModule", "load_dataset"]
