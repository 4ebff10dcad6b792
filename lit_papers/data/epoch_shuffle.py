"""`EpochShuffle`: a shuffling sampler whose order depends only on (seed, epoch).

A DataLoader with a seeded generator draws epoch k's order from the generator state left by
epochs 0..k-1, so a run resumed from a checkpoint replays epoch 0's order and diverges from the
uninterrupted run. Lightning calls `set_epoch` before every epoch; reseeding there makes the
order a pure function of the epoch. Under DDP Lightning swaps it (a RandomSampler) for a
DistributedSampler, which is epoch-seeded the same way.
"""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler


class EpochShuffle(RandomSampler):
    """RandomSampler over `data_source` whose permutation for epoch e is seeded by seed + e."""

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        # A large odd stride keeps (seed, epoch) pairs of nearby seeds from colliding.
        self.generator.manual_seed(self.seed + 1_000_003 * int(epoch))
