"""`UploadConfig`: the run's `config.yaml` goes with its W&B run as `cli_config.yaml` (W&B keeps its
own `config.yaml` for the run's config), so the run can be rerun from its W&B page."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.loggers import WandbLogger


class UploadConfig(Callback):
    """Saves `<run folder>/config.yaml` into the W&B run's files once the CLI has written it (setup)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.done = False

    def _upload(self, trainer) -> None:
        path = self.folder / "config.yaml"
        if self.done or not trainer.is_global_zero or not path.is_file():
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                files = Path(logger.experiment.dir)
                shutil.copyfile(path, files / "cli_config.yaml")
                logger.experiment.save(str(files / "cli_config.yaml"), base_path=str(files), policy="now")
                self.done = True

    def on_fit_start(self, trainer, pl_module) -> None:
        self._upload(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._upload(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        self._upload(trainer)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._upload(trainer)
