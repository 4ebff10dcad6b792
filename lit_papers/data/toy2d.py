"""Two-dimensional toy densities for normalizing flows, and their DataModule.

Each sampler draws ``n`` points with a ``torch.Generator`` so a seed fixes the
data exactly. Samplers return float32 tensors of shape (n, 2), scaled to lie
roughly within [-4, 4]^2 so one standard-normal base fits them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


def moons(n: int, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Two interleaving half circles."""
    upper = torch.rand(n // 2, generator=g) * math.pi
    lower = torch.rand(n - n // 2, generator=g) * math.pi
    x = torch.cat([torch.stack([upper.cos(), upper.sin()], 1),
                   torch.stack([1 - lower.cos(), 0.5 - lower.sin()], 1)])
    x = x + noise * torch.randn(x.shape, generator=g)
    return (x - torch.tensor([0.5, 0.25])) * 2.0


def circles(n: int, g: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """Two concentric circles (radii 1 and 0.5 before scaling)."""
    theta = torch.rand(n, generator=g) * 2 * math.pi
    radius = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, 0.5)
    x = torch.stack([theta.cos(), theta.sin()], 1) * radius[:, None]
    return (x + noise * torch.randn(x.shape, generator=g)) * 3.0


def eight_gaussians(n: int, g: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """A ring of 8 Gaussian modes."""
    angles = torch.randint(0, 8, (n,), generator=g) * (2 * math.pi / 8)
    centers = torch.stack([angles.cos(), angles.sin()], 1) * 2.0
    return (centers + noise * torch.randn(n, 2, generator=g)) * 1.414


def checkerboard(n: int, g: torch.Generator, noise: float = 0.0) -> torch.Tensor:
    """Uniform density on the black squares of a 4x4 checkerboard over [-4, 4]^2."""
    del noise
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0
    x2 = x2 + x1.floor() % 2
    return torch.stack([x1, x2], 1) * 2.0


def pinwheel(n: int, g: torch.Generator, noise: float = 0.0) -> torch.Tensor:
    """Five spiralling arms (radial and tangential Gaussian noise, then a twist)."""
    del noise
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    label = torch.randint(0, arms, (n,), generator=g)
    feats = torch.randn(n, 2, generator=g) * torch.tensor([radial_std, tangential_std])
    feats[:, 0] += 1.0
    angle = label * (2 * math.pi / arms) + rate * feats[:, 0].exp()
    rot = torch.stack([angle.cos(), -angle.sin(), angle.sin(), angle.cos()], 1).view(n, 2, 2)
    return 2.0 * torch.einsum("ni,nij->nj", feats, rot)


# Methods as data: the densities by name.
DENSITIES: dict[str, Callable[..., torch.Tensor]] = {
    "moons": moons,
    "circles": circles,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
}


def sample_toy2d(name: str, n: int, seed: int = 0, noise: float | None = None) -> torch.Tensor:
    """Draw n points of the named density -> (n, 2) float32."""
    if name not in DENSITIES:
        raise ValueError(f"unknown 2D density {name!r}; valid densities: {sorted(DENSITIES)}")
    g = torch.Generator().manual_seed(seed)
    kwargs = {} if noise is None else {"noise": noise}
    x = DENSITIES[name](n, g, **kwargs)
    return x[torch.randperm(n, generator=g)].float()  # shuffled: any prefix is a fair sample


class Toy2DDataModule(L.LightningDataModule):
    """Fixed train/val/test samples of a 2D density (unlabeled: batches are ``(x,)``).

    Args:
        dataset: one of ``DENSITIES`` (moons, circles, 8gaussians, checkerboard, pinwheel).
        n_train, n_val, n_test: sample sizes; each split uses its own seed offset.
        batch_size: training batch size; evaluation uses whole splits up to ``eval_batch_size``.
        noise: the density's noise level (None: its default).
        seed: base seed of the three samples.

    Attributes ``dim`` and ``input_shape`` are known right after ``__init__``.
    """

    def __init__(self, dataset: str = "moons", n_train: int = 10000, n_val: int = 2000,
                 n_test: int = 5000, batch_size: int = 512, eval_batch_size: int = 5000,
                 noise: float | None = None, seed: int = 0):
        super().__init__()
        if dataset not in DENSITIES:
            raise ValueError(f"unknown 2D density {dataset!r}; valid densities: {sorted(DENSITIES)}")
        self.save_hyperparameters()
        self.dataset, self.batch_size, self.eval_batch_size = dataset, batch_size, eval_batch_size
        self.dim, self.input_shape = 2, (2,)
        self.train_x = self.val_x = self.test_x = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_x is not None:
            return
        h = self.hparams
        self.train_x = sample_toy2d(h.dataset, h.n_train, h.seed, h.noise)
        self.val_x = sample_toy2d(h.dataset, h.n_val, h.seed + 1, h.noise)
        self.test_x = sample_toy2d(h.dataset, h.n_test, h.seed + 2, h.noise)

    def _loader(self, x: torch.Tensor, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_x, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_x, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_x, self.eval_batch_size, shuffle=False)
