"""Copies of a network's state (theta_0, theta_k) and the reset of survivors to them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from .masks import MaskSet


def snapshot(net: nn.Module, device: torch.device | str | None = "cpu") -> dict[str, Tensor]:
    """A detached copy of ``net.state_dict()`` (parameters *and* buffers such as BN statistics).

    Kept on the CPU by default: it is only read once per round, so it costs no device memory.
    """
    return {k: v.detach().to(device, copy=True) for k, v in net.state_dict().items()}


@torch.no_grad()
def reset_to_(net: nn.Module, state: Mapping[str, Tensor], masks: MaskSet | None = None,
              params: Mapping[str, Tensor] | None = None) -> None:
    """Load ``state`` into ``net`` in place, then zero the pruned weights.

    ``load_state_dict`` copies into the existing tensors, so optimizer references and
    device placement survive, and survivors are bit-identical to ``state``.
    """
    net.load_state_dict(state, strict=True)
    if masks is not None:
        masks.apply_to_weights_(params if params is not None else dict(net.named_parameters()))


def fresh_init(build: Callable[[], nn.Module], seed: int) -> dict[str, Tensor]:
    """The state of a freshly built network whose initialisation is drawn from ``seed``.

    Used by the random re-initialisation control: same architecture and init distribution,
    independent draw, without touching the global random stream of the training run.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return snapshot(build())
