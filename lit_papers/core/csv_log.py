"""A CSVLogger that appends: a resumed run keeps the rows its earlier part wrote.

Lightning's CSV writer deletes an existing `metrics.csv` when its folder is not empty; a run
resumed with `--ckpt_path last` continues in its own folder, so that would erase its history.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Keep the file; start from its header so new columns trigger Lightning's header rewrite.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)  # Lightning writes (and expects) sorted keys


class RunCSVLogger(CSVLogger):
    """`CSVLogger` writing `<save_dir>/<name>/<version>/metrics.csv`, appending on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
