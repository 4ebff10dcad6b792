"""Training parts shared by every paper, and the run infrastructure.

Training: `ClassifierModule` (classifier.py) and its optimizer/schedule builder (optim.py); the
parts that make steps cheap or many (chunked_classifier.py, step_capture.py, population.py);
running metrics and guards. Run infrastructure: the run folder, summary, CSV log, checkpoints,
preemption, RNG state, figures. It imports models/ and the leaves, never a paper package.
"""

from .classifier import ClassifierModule
from .figures import run_dir, save_figure

__all__ = ["ClassifierModule", "run_dir", "save_figure"]
