"""`estimate_rademacher`: an empirical Rademacher-complexity estimate by fitting random labels.

One `RandomLabelModule` fit per seed (the one training loop: Lightning's) to uniformly random
labels of the given points; the chance-corrected training accuracy (`rademacher.py`) of each
fit, averaged over the seeds, is the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.data.corruptions import apply_corruption

from .rademacher import rademacher_from_accuracy
from .random_labels import RandomLabelModule
from lit_papers.core.optim import Optim


def _fit_random_labels(x, y, num_classes, arch, arch_kwargs, max_epochs, lr, batch_size, seed) -> float:
    L.seed_everything(seed, workers=True, verbose=False)
    module = RandomLabelModule(arch=arch, arch_kwargs=arch_kwargs, num_classes=num_classes,
                               input_shape=tuple(x.shape[1:]), optim=Optim(name="adam", lr=lr), track_test=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    return module.evaluate(x, y)[0]


def estimate_rademacher(x: torch.Tensor, num_classes: int = 2, arch: str = "mlp",
                        arch_kwargs: Optional[dict] = None, seeds: Sequence[int] = (0, 1, 2),
                        max_epochs: int = 100, lr: float = 1e-3, batch_size: int = 64) -> dict:
    """Fit `arch` to uniformly random labels of the points `x` (N, C, H, W) once per seed.

    Returns {"estimate": mean chance-corrected train accuracy, "train_acc": per-seed accuracies}.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be images of shape (N, C, H, W), got {tuple(x.shape)}; "
                         "reshape vectors to (N, 1, 1, D)")
    accs = []
    for seed in seeds:
        dummy = torch.zeros(len(x), dtype=torch.long)
        _, y, _, _ = apply_corruption("random_labels", x, dummy, x[:1], dummy[:1], seed=seed,
                                      num_classes=num_classes)
        accs.append(_fit_random_labels(x, y, num_classes, arch, arch_kwargs, max_epochs, lr, batch_size,
                                       seed))
    estimates = [rademacher_from_accuracy(a, num_classes) for a in accs]
    return {"estimate": sum(estimates) / len(estimates), "train_acc": accs}
