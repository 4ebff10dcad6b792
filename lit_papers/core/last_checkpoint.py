"""`LastCheckpoint`: `checkpoints/last.ckpt`, refreshed every N epochs and always at the end of fit.

Lightning's `save_last` only refreshes `last.ckpt` when the best checkpoint changes, and its
step-based trigger is skipped for manual optimization, so the run folder keeps its own: saved at
the end of every `every_n_epochs`-th epoch (resume granularity) and once more when training ends
between two such epochs, so a finished run's `last.ckpt` always holds its final weights. Populations
and lottery studies with short epochs and large checkpoints save every few epochs instead of every one.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1):
        if every_n_epochs < 1:
            raise ValueError(f"checkpoint_every_n_epochs must be >= 1, got {every_n_epochs}")
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                         every_n_epochs=every_n_epochs, enable_version_counter=False)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # skips when this step is saved already
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
