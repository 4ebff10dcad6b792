"""A CSVLogger that appends: a resumed run keeps the rows its earlier part wrote.

Lightning's CSV writer deletes an existing `metrics.csv` when its folder is not empty; a run
resumed with `--ckpt_path last` continues in its own folder, so that would erase its history.
Rows a killed part wrote after its last checkpoint are replayed by the resumed part, so they are
dropped first (`drop_rows_from`): the file then holds each step once, as an uninterrupted run's.
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

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows logged at `step` or later (a resume from a checkpoint taken at `step`
        replays them); returns how many were removed."""
        self.experiment.save()  # nothing of this part may be pending in the buffer
        path = self.experiment.metrics_file_path
        if not self._fs.isfile(path):
            return 0
        with self._fs.open(path, "r", newline="") as f:
            rows = list(csv.reader(f))
        if not rows or "step" not in rows[0]:
            return 0
        col = rows[0].index("step")
        keep = [r for r in rows[1:] if not (len(r) > col and r[col] and float(r[col]) >= step)]
        removed = len(rows) - 1 - len(keep)
        if removed:
            with self._fs.open(path, "w", newline="") as f:
                csv.writer(f).writerows([rows[0], *keep])
        return removed
