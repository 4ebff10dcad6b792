"""Training parts shared by every paper, and the run infrastructure.

Training: `ClassifierModule` (classifier.py) and its optimizer/schedule group `Optim` (optim.py; settings
groups in settings.py, the keys they replaced in renamed_keys.py); the
parts any module can hold to make steps cheap or many (chunked_steps.py, step_chunks.py,
step_capture.py, stacked_members.py, member_metrics.py, population_records.py, host_overhead.py)
and the modules wired from them (chunked_classifier.py, population.py); running metrics, guards.
Run infrastructure: the run folder, summary, CSV log, checkpoints, preemption, RNG state, figures.
It imports models/ and the leaves, never a paper package.
"""

from .classifier import ClassifierModule
from .figures import run_dir, save_figure
from .optim import Optim

__all__ = ["ClassifierModule", "Optim", "run_dir", "save_figure"]
