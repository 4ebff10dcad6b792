"""`PredictionsFile`: `predict` writes what `predict_step` returned to `predictions.pt` in its folder."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def _concat(outputs: list):
    """Batches of tensors (or tuples/dicts of tensors) joined along the batch dimension."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([o.detach().cpu() for o in outputs]) if first.dim() else torch.stack(outputs).cpu()
    if isinstance(first, dict):
        return {key: _concat([o[key] for o in outputs]) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([o[i] for o in outputs]) for i in range(len(first)))
    return outputs


class PredictionsFile(BasePredictionWriter):
    """Saves the predictions of every predict dataloader, in order, as `<folder>/predictions.pt`
    (`torch.load` gives a tensor, or a list of them with several dataloaders)."""

    def __init__(self, folder: str | Path):
        super().__init__(write_interval="epoch")
        self.folder = Path(folder)
        self.path = self.folder / "predictions.pt"

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        if not trainer.is_global_zero or not predictions:
            return
        nested = len(trainer.num_predict_batches) > 1  # several dataloaders: one list of batches each
        result = [_concat(p) for p in predictions] if nested else _concat(predictions)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".pt.tmp")
        torch.save(result, tmp)
        tmp.replace(self.path)
