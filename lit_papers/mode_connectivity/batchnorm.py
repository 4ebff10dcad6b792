"""Exact BatchNorm statistics for any point in weight space.

Running statistics are buffers of the network, shared by every t of a curve and every point of
a plane, so they are wrong for any new set of weights until recomputed; forgetting to do so
is the most reported pitfall of the reference code. `recompute_bn` makes one pass over the
data and sets every BatchNorm layer's running mean/variance to the exact mean and unbiased
variance of its inputs over the whole data set (merged across minibatches with Chan's
formula, so unequal batch sizes do not bias the result).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(net: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers that keep running statistics."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(net: nn.Module) -> bool:
    return bool(batchnorm_layers(net))


class _Moments:
    """Running count, mean and sum of squared deviations per channel (float64)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().double()  # (N, C) or (N, C, *spatial)
        dims = [0, *range(2, x.dim())]
        n = x.numel() // x.shape[1]
        mean = x.mean(dims)
        m2 = ((x - mean.view(1, -1, *([1] * (x.dim() - 2)))) ** 2).sum(dims)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total


@torch.no_grad()
def recompute_bn(net: nn.Module, forward: Callable[[Tensor], Tensor], batches: Iterable) -> None:
    """Set the running statistics of every BatchNorm layer in `net` to exact data-set statistics.

    Args:
        net: the module holding the BatchNorm layers.
        forward: runs the network at the weights of interest, e.g. `lambda x: curve(x, t)`.
        batches: iterable of `x` or `(x, y, ...)` minibatches (the training data).

    Every other module is in eval mode during the pass (dropout off: the statistics are those
    the evaluation-time network sees); BatchNorm layers normalise with batch statistics, as in
    training. Training mode, momentum and `num_batches_tracked` are restored afterwards.
    """
    layers = batchnorm_layers(net)
    if not layers:
        return
    was_training = {m: m.training for m in net.modules()}
    tracked = {m: m.num_batches_tracked.clone() for m in layers}
    moments = {m: _Moments() for m in layers}
    hooks = [m.register_forward_pre_hook(moments[m]) for m in layers]
    net.eval()
    for m in layers:
        m.train()
    device = layers[0].running_mean.device
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            forward(x.to(device))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in was_training.items():
            m.training = mode
    for m in layers:
        stats = moments[m]
        if stats.count < 2:
            raise ValueError("recompute_bn needs at least two samples per channel; got none or one")
        m.running_mean.copy_(stats.mean.to(m.running_mean.dtype))
        m.running_var.copy_((stats.m2 / (stats.count - 1)).to(m.running_var.dtype))
        m.num_batches_tracked.copy_(tracked[m])
