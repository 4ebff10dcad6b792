"""Batches served from tensors that already live on the training device.

For datasets that fit in device memory this replaces DataLoader workers and the per-step
host-to-device copy: an epoch is one `randperm` and a sequence of index gathers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class DeviceBatches:
    """Iterable of `(x, y)` minibatches drawn from device-resident tensors.

    Under DDP each of `world_size` ranks takes an equal, disjoint share of one permutation that
    every rank computes from the same seed; the share is padded by wrapping (like
    `DistributedSampler`) so all ranks run the same number of steps.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 epoch_fn: Callable[[], int] | None = None):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.per_rank = -(-len(x) // world_size)  # ceil

    def _indices(self) -> torch.Tensor:
        n = len(self.x)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch_fn())
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.per_rank * self.world_size
        if total > n:  # wrap to make the shares equal
            order = torch.cat([order, order[: total - n]])
        return order[self.rank:total:self.world_size].to(self.x.device)

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        for b in range(len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x.index_select(0, sel), self.y.index_select(0, sel)
