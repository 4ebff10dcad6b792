"""Irregularly sampled 2D spirals (Chen et al. 2018, section 5): the latent ODE's toy data.

Each trajectory is an Archimedean spiral r = a + b·s traced over a shared grid of ``n_times``
times, half clockwise and half counter-clockwise, with a random phase and start radius. Every
trajectory keeps its own random subset of ``n_obs`` observed times, with Gaussian noise on the
observed points. Batches are ``(x, mask, clean)``: noisy points (N, T, 2), observed mask (N, T),
noiseless points (N, T, 2). The model sees only x where mask is true; clean is for evaluation.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def make_spirals(n: int, n_times: int = 100, n_obs: int = 30, noise: float = 0.1, seed: int = 0):
    """-> (x noisy (n, T, 2), mask (n, T) bool, clean (n, T, 2)); times are linspace(0, 1, T)."""
    if not 1 <= n_obs <= n_times:
        raise ValueError(f"n_obs must be in [1, n_times={n_times}], got {n_obs}")
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0, 1, n_times) * 4 * math.pi  # two turns
    direction = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)[:, None]
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    start = 0.5 + torch.rand(n, 1, generator=g)
    radius = (start + 0.15 * s) / 2.0
    angle = phase + direction * s
    clean = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=-1)  # (n, T, 2)
    # Each trajectory observes a random subset of the grid.
    order = torch.rand(n, n_times, generator=g).argsort(dim=1)
    mask = torch.zeros(n, n_times, dtype=torch.bool).scatter_(1, order[:, :n_obs], True)
    x = clean + noise * torch.randn(clean.shape, generator=g)
    return x * mask[..., None], mask, clean


class SpiralsDataModule(L.LightningDataModule):
    """Train/val/test spirals with ``n_obs`` of ``n_times`` points observed per trajectory.

    Attributes ``times`` (T,) and ``dim`` = 2 are known right after ``__init__``.
    """

    def __init__(self, n_train: int = 1000, n_val: int = 200, n_test: int = 500, n_times: int = 100,
                 n_obs: int = 30, noise: float = 0.1, batch_size: int = 50, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.times, self.dim = torch.linspace(0, 1, n_times), 2
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        h = self.hparams
        for offset, (name, n) in enumerate((("train", h.n_train), ("val", h.n_val), ("test", h.n_test))):
            self.splits[name] = TensorDataset(*make_spirals(n, h.n_times, h.n_obs, h.noise, h.seed + offset))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=len(self.splits["val"]))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=len(self.splits["test"]))
