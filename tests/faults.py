"""Fault injection for the reliability tests, loaded by subprocess runs with PYTHONPATH=tests:
`--trainer.callbacks+=faults.SignalAt --trainer.callbacks.init_args.step=N`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch import Callback


class SignalAt(Callback):
    """Sends `sig` to this process after training step `step`, once a last.ckpt exists (if required)."""

    def __init__(self, step: int = 1, sig: str = "SIGKILL", need_checkpoint: bool = True):
        self.step, self.sig, self.need_checkpoint = step, sig, need_checkpoint
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sent or trainer.global_step < self.step:
            return
        if self.need_checkpoint and not (Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt").exists():
            return
        self.sent = True
        os.kill(os.getpid(), getattr(signal, self.sig))


class RaiseAt(Callback):
    """Raises `ValueError` inside training after step `step`: a failure of the run, not of its command."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise ValueError(f"injected failure at step {trainer.global_step}")
