"""`StepChunks`: S consecutive minibatches of a loader as one `(S, B, ...)` batch.

The data side of several optimizer steps per Lightning `training_step` (`ChunkedSteps`): a
datamodule with a `batch_grouping` attribute (VisionDataModule) gets it installed by the part's
`setup` and wraps its training loader with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch


class StepChunks:
    """Groups S consecutive `(x, y)` minibatches of `loader` into `(S, B, ...)` stacked batches.

    Order is preserved, so S optimizer steps on one chunk see exactly the minibatches that S
    ordinary steps would. A minibatch whose shape differs from the chunk's (the short last one)
    starts a chunk of its own. Lightning does not re-shard a wrapped DataLoader under DDP: there,
    use device-resident data (`on_device`), whose batches are split by rank already.
    """

    def __init__(self, loader: Iterable, steps: int):
        if steps < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps}")
        self.loader, self.steps = loader, steps

    # Lightning reseeds shuffling by calling `set_epoch` on `loader.sampler` / `batch_sampler.sampler`.
    @property
    def sampler(self):
        return getattr(self.loader, "sampler", None)

    @property
    def batch_sampler(self):
        return getattr(self.loader, "batch_sampler", None)

    # Mid-epoch resume: a loader that saves (epoch, batches done) counts Lightning's batches, which
    # here are groups; it must skip the minibatches those groups held.
    def state_dict(self) -> dict:
        inner = getattr(self.loader, "state_dict", None)
        state = dict(inner()) if callable(inner) else {}
        if "batches_done" in state:
            state["batches_done"] = self.minibatches(int(state["batches_done"]))
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        inner = getattr(self.loader, "load_state_dict", None)
        if callable(inner) and state_dict:
            inner(state_dict)

    def _sizes(self) -> list[int]:
        """Minibatches per chunk, from the loader's length (full batches, then the short one)."""
        n = len(self.loader)
        bs = getattr(self.loader, "batch_size", None)
        per_rank = getattr(self.loader, "per_rank", None) or len(getattr(self.loader, "dataset", ()))
        # a short last minibatch exists unless the loader drops it
        short = bool(bs and per_rank and per_rank % bs) and not getattr(self.loader, "drop_last", False)
        full = n - 1 if short else n
        sizes = [self.steps] * (full // self.steps) + ([full % self.steps] if full % self.steps else [])
        return sizes + ([1] if short else [])

    def __len__(self) -> int:
        return len(self._sizes())

    def minibatches(self, chunks: int) -> int:
        """Optimizer steps in the first `chunks` chunks of an epoch."""
        return sum(self._sizes()[:chunks])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        for x, y in self.loader:
            if group and (len(group) == self.steps or x.shape != group[0][0].shape):
                yield _stack(group)
                group = []
            group.append((x, y))
        if group:
            yield _stack(group)


def _stack(group: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([x for x, _ in group]), torch.stack([y for _, y in group])
