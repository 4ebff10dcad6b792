"""`NonFiniteGuard`: stop a run whose training loss became NaN/inf, with a message naming the fix.

Without it a diverged run keeps training on NaN weights to the end and overwrites `last.ckpt`
with them. The check reads the loss only every `log_every_n_steps` steps (and at epoch end),
so it adds no per-step device synchronisation: NaN weights keep producing NaN losses, so a
later check still catches them, before the next checkpoint of a normal schedule is written.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback

from lit_papers.errors import RunFailed


class NonFiniteGuard(Callback):
    """Raises `RunFailed` (exit code 1) when the training loss is not finite."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
        if trainer.global_step % every == 0:
            self._check(trainer, _loss_of(outputs))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer, trainer.callback_metrics.get("train/loss"))

    def on_validation_start(self, trainer, pl_module) -> None:
        # Validation is where ModelCheckpoint writes; never let NaN weights replace a good last.ckpt.
        if not trainer.sanity_checking:
            self._check(trainer, trainer.callback_metrics.get("train/loss"))

    @staticmethod
    def _check(trainer, loss) -> None:
        if loss is None:
            return
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        bad = trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False)
        if bad:
            raise RunFailed(
                f"the training loss became {value} at step {trainer.global_step} (epoch {trainer.current_epoch}). "
                f"Lower the learning rate (--model.init_args.optim.lr), clip gradients "
                f"(--trainer.gradient_clip_val=1.0), or check the data; the last checkpoint written before "
                f"this step is intact (resume with --ckpt_path last after changing the setting).")


def _loss_of(outputs):
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return outputs.get("loss")
    return None
