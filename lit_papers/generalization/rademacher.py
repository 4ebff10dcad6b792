"""An empirical Rademacher-complexity estimate obtained by fitting random labels (Sec. 2.2).

For binary h: X -> {-1, +1} and signs sigma_i, (1/n) sum_i sigma_i h(x_i) = 1 - 2 err(h), so
R_n(H) = E_sigma sup_h (1/n) sum_i sigma_i h(x_i) = E_sigma [1 - 2 min_h err]. Training a net on
uniformly random labels approximates the sup from below. For K classes we report the analogous
chance-corrected accuracy (acc - 1/K) / (1 - 1/K), which equals 1 - 2 err for K = 2: 1 means
the class fits every labelling (the bound is vacuous), 0 means it does no better than chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.data.corruptions import apply_corruption


def rademacher_from_accuracy(acc: float, num_classes: int) -> float:
    """Chance-corrected training accuracy on random labels: (acc - 1/K) / (1 - 1/K)."""
    chance = 1.0 / num_classes
    return (acc - chance) / (1.0 - chance)


def _fit_random_labels(x, y, num_classes, arch, arch_kwargs, max_epochs, lr, batch_size, seed) -> float:
    from .random_labels import RandomLabelModule  # the one training loop: Lightning's

    L.seed_everything(seed, workers=True, verbose=False)
    module = RandomLabelModule(arch=arch, arch_kwargs=arch_kwargs, num_classes=num_classes,
                               input_shape=tuple(x.shape[1:]), optimizer="adam", lr=lr, track_test=False)
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
