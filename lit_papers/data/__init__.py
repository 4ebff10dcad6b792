"""DataModules and raw datasets."""

from .datasets import DATASETS, load_dataset
from .device_loader import DeviceBatches
from .member_labels import MemberLabelsDataModule
from .spirals import SpiralsDataModule
from .toy2d import Toy2DDataModule
from .vision import VisionDataModule

__all__ = ["DATASETS", "DeviceBatches", "MemberLabelsDataModule", "SpiralsDataModule", "Toy2DDataModule",
           "VisionDataModule", "load_dataset"]
