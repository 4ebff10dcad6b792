"""Imports every LightningModule and DataModule of the package so the CLI resolves short names.

One import line per paper package.
"""

from lit_papers.core import ClassifierModule  # noqa: F401
from lit_papers.data import VisionDataModule  # noqa: F401
