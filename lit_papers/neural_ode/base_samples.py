"""`BaseSamplesDataModule`: the "data" of a flow trained without data (reverse KL) are sample slots.

A training batch is the indices of one step's base samples; the module draws the samples themselves
from a generator seeded by (seed, step), so a resumed run draws exactly what an uninterrupted one
did. Under DDP Lightning shards the indices with a DistributedSampler: each rank keeps its rows of
the same per-step draw, so the ranks together train on exactly the single-process batch.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class SampleSlots(Dataset):
    """Item i is the integer i (the sample's index in the epoch)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def rows_of_step(batch: torch.Tensor, world_size: int) -> tuple[int, torch.Tensor]:
    """(samples in the whole step, this rank's rows in it) for a batch of epoch indices.

    A step covers the epoch indices [k n, (k + 1) n) with n = batch size x world size, and the
    DistributedSampler gives each rank an interleaved share, so the rows are the indices modulo n."""
    n = len(batch) * world_size
    return n, batch % n


class BaseSamplesDataModule(L.LightningDataModule):
    """Sample-slot batches for `DensityMatchingModule`.

    Args:
        batch_size: base samples z0 ~ N(0, I) per optimizer step and rank (DDP on W ranks: W x batch_size
            per step).
        steps_per_epoch: optimizer steps between validations.
        n_eval: samples of the validation KL estimate (the same samples at every validation).
    """

    def __init__(self, batch_size: int = 256, steps_per_epoch: int = 100, n_eval: int = 10000):
        super().__init__()
        if min(batch_size, steps_per_epoch, n_eval) < 1:
            raise ValueError(f"batch_size, steps_per_epoch and n_eval must be >= 1, got "
                             f"{batch_size}, {steps_per_epoch}, {n_eval}")
        self.save_hyperparameters()
        self.dim = 2

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        world = self.trainer.world_size if self.trainer is not None else 1  # every rank takes steps_per_epoch
        return DataLoader(SampleSlots(h.steps_per_epoch * h.batch_size * world), batch_size=h.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(SampleSlots(self.hparams.n_eval), batch_size=self.hparams.n_eval)
