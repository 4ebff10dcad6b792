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

    # Mid-epoch resume (Lightning saves these into checkpoints): a checkpoint written inside an
    # epoch (iteration-based validation, preemption) resumes with the batches not yet trained.
    #: () -> batches of the current epoch trained so far; set by the data module
    progress: Callable[[], int] | None = None
    _skip: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        done = self.progress() if self.progress is not None else 0
        return {"epoch": int(self.epoch_fn()), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._skip = (int(state_dict.get("epoch", 0)), int(state_dict.get("batches_done", 0)))

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        skip, self._skip = self._skip, None
        start = skip[1] if skip is not None and skip[0] == self.epoch_fn() else 0
        for b in range(start, len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x.index_select(0, sel), self.y.index_select(0, sel)
