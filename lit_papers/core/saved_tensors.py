"""Activation memory of a training step, counted exactly with `torch.autograd.graph.saved_tensors_hooks`.

Every tensor autograd saves for backward is tracked from the moment it is saved until autograd
frees it, deduplicated by storage, parameters excluded. The peak over forward + backward is the
step's activation memory: exact, and the same on CPU and GPU (the process's RSS on CPU moves with
the allocator's caching, not with the activations).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class LiveSavedBytes:
    """Peak bytes of live saved-for-backward tensors (activations; `exclude_ptrs` storages left out)."""

    def __init__(self, exclude_ptrs: set[int]):
        self.exclude, self.live, self.refs = exclude_ptrs, 0, {}
        self.peak = 0

    def pack(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr in self.exclude:
            return t
        # Keep a detached alias: holding the tensor itself would tie a saved output to its own
        # grad_fn in a cycle the collector cannot see, and its bytes would never be released.
        return _Tracked(self, t.detach(), ptr)

    @staticmethod
    def unpack(obj):
        return obj.tensor if isinstance(obj, _Tracked) else obj

    def add(self, ptr: int, nbytes: int) -> None:
        count = self.refs.get(ptr, (0, nbytes))[0]
        if count == 0:
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self.refs[ptr] = (count + 1, nbytes)

    def remove(self, ptr: int) -> None:
        count, nbytes = self.refs[ptr]
        if count == 1:
            self.live -= nbytes
            del self.refs[ptr]
        else:
            self.refs[ptr] = (count - 1, nbytes)


class _Tracked:
    """Holds one saved tensor; its deletion (autograd freeing the node) releases the bytes."""

    def __init__(self, meter: LiveSavedBytes, tensor, ptr: int):
        self.meter, self.tensor, self.ptr = meter, tensor, ptr
        meter.add(ptr, tensor.untyped_storage().nbytes())

    def __del__(self):
        self.meter.remove(self.ptr)


def peak_saved_bytes(net: nn.Module, step: Callable[[], object]) -> int:
    """Peak live saved-for-backward bytes while `step()` runs (a forward and backward of `net`)."""
    meter = LiveSavedBytes({p.untyped_storage().data_ptr() for p in net.parameters()})
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        step()
    return meter.peak


def training_step_saved_bytes(net: nn.Module, x: torch.Tensor, loss: Callable[[object], torch.Tensor]) -> int:
    """Peak activation bytes of one training forward + backward of `net` on the batch `x`.

    `loss` maps the network's output to the scalar that is backpropagated. The network is put in
    training mode for the step and left in the mode it was in; its gradients are cleared after.
    """
    was_training = net.training
    net.train()

    def step():
        loss(net(x)).backward()

    try:
        with torch.enable_grad():
            return peak_saved_bytes(net, step)
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was_training)
