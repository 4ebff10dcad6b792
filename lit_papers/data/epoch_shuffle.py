"""Training order that survives a restart: `EpochShuffle` and `ResumableLoader`.

A DataLoader with a seeded generator draws epoch k's order from the generator state left by
epochs 0..k-1, so a run resumed from a checkpoint replays epoch 0's order and diverges from the
uninterrupted run. Lightning calls `set_epoch` before every epoch; reseeding there makes the
order a pure function of (seed, epoch). Under DDP Lightning swaps it (a RandomSampler) for a
DistributedSampler, which is epoch-seeded the same way.

A checkpoint written mid-epoch (preemption, step checkpoints) also needs the position inside
the epoch: `ResumableLoader` is a DataLoader with `state_dict`/`load_state_dict`, which
Lightning saves into the checkpoint and hands back on resume, so the resumed epoch continues
with the batches the interrupted one had not trained on yet.
"""

from __future__ import annotations

from typing import Optional
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochShuffle(RandomSampler):
    """RandomSampler over `data_source` whose permutation for epoch e is seeded by seed + e."""

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self._skip: Optional[tuple[int, int]] = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        # A large odd stride keeps (seed, epoch) pairs of nearby seeds from colliding.
        self.generator.manual_seed(self.seed + 1_000_003 * self.epoch)

    def skip_once(self, epoch: int, samples: int) -> None:
        """The next pass over `epoch` starts after its first `samples` indices."""
        self._skip = (int(epoch), int(samples))

    def __iter__(self):
        order = list(super().__iter__())
        skip, self._skip = self._skip, None
        if skip is not None and skip[0] == self.epoch:
            order = order[skip[1]:]
        return iter(order)


class ResumableLoader(DataLoader):
    """A DataLoader whose state is (epoch, batches already trained in it)."""

    #: () -> batches of the current epoch trained so far; set by the data module that owns the loader
    progress: Optional[Callable[[], int]] = None

    def state_dict(self) -> dict:
        done = self.progress() if self.progress is not None else 0
        epoch = self.sampler.epoch if isinstance(self.sampler, EpochShuffle) else 0
        return {"epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict) -> None:
        if isinstance(self.sampler, EpochShuffle) and self.batch_size:
            self.sampler.skip_once(state_dict.get("epoch", 0), state_dict.get("batches_done", 0) * self.batch_size)


def fit_progress(trainer) -> Callable[[], int]:
    """Batches of the current epoch already through `training_step`, from Lightning's counters.

    At a step-boundary save (on_train_batch_end) `ready` counts the batch just trained, which is
    exactly the number a resumed epoch must skip."""
    return lambda: trainer.fit_loop.epoch_loop.batch_progress.current.ready
