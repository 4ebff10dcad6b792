"""DataModules and raw datasets."""

from .datasets import DATASETS, load_dataset
from .device_loader import DeviceBatches
from .vision import VisionDataModule

__all__ = ["DATASETS", "DeviceBatches", "VisionDataModule", "load_dataset"]
from .toy2d import Toy2DDataModule  # noqa: E402, F401
