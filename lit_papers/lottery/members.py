"""The networks `IMP` works on, behind its `MemberNets` interface.

`IMP` reads and writes every state with a leading member axis, name -> (K, *shape). A run has one
plain network with a `MaskSet` (`OneNetwork`, K = 1); a study has K members stacked in one
`StackedMembers` with their masks as its buffers (`StackedNetworks`). Both copy states in and out
in place, so optimizer references, device placement and a captured training step stay valid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional

import torch
from torch import Tensor, nn

from lit_papers.core.stacked_members import StackedMembers

from .imp import State
from .masks import MaskSet
from .snapshots import reset_to_, snapshot


class OneNetwork:
    """A plain network and its masks as a population of one (member axis of size 1).

    Args:
        net: the network; its parameters are trained by Lightning's own optimizer steps.
        masks: the `MaskSet` over its prunable `weights` (name -> parameter).
        build: makes a freshly initialised network of the same architecture.
    """

    def __init__(self, net: nn.Module, masks: MaskSet, weights: Mapping[str, nn.Parameter],
                 build: Callable[[], nn.Module]):
        self.net, self.masks, self.weights, self.build_member = net, masks, weights, build

    def member_weights(self) -> State:
        return {n: w.detach()[None] for n, w in self.weights.items()}

    def copy_members(self) -> State:
        # on the CPU: theta_0, theta_k and the early-stopping state are read once per level
        return {n: v[None] for n, v in snapshot(self.net).items()}

    def live_members(self) -> State:
        return {n: v[None] for n, v in self.net.state_dict().items()}

    def load_members_(self, state: State, members: Optional[Tensor] = None) -> None:
        if members is None or bool(members[0]):
            reset_to_(self.net, {n: v[0] for n, v in state.items()}, self.masks, self.weights)

    def set_member_masks(self, masks: State) -> None:
        self.masks.load_({n: m[0] for n, m in masks.items()})
        self.masks.apply_to_weights_(self.weights)


class StackedNetworks:
    """The K members of a `StackedMembers` population, masked by its own mask buffers.

    Args:
        stacked: the members; their stacked parameters are what the optimizer steps.
        prunable: names of the prunable weights.
        build: makes one freshly initialised member network.
    """

    def __init__(self, stacked: StackedMembers, prunable: list[str], build: Callable[[], nn.Module]):
        self.stacked, self.prunable, self.build_member = stacked, prunable, build

    def member_weights(self) -> State:
        params = self.stacked.member_params()
        return {n: params[n].detach() for n in self.prunable}

    def live_members(self) -> State:
        params = {n: p.detach() for n, p in self.stacked.member_params().items()}
        return {**params, **self.stacked.member_buffers()}

    def copy_members(self) -> State:
        # on the device: the early-stopping copy is merged in place at every validation
        return {n: t.clone() for n, t in self.live_members().items()}

    @torch.no_grad()
    def load_members_(self, state: State, members: Optional[Tensor] = None) -> None:
        current = {**self.stacked.member_params(), **self.stacked.member_buffers()}
        for name, value in state.items():
            target = current[name]
            value = value.to(target.device)  # theta_0 is taken in setup, before the move to the device
            if members is None:
                target.copy_(value)
            else:
                chosen = members.to(target.device).view(-1, *[1] * (target.dim() - 1))
                target.copy_(torch.where(chosen, value, target))
        self.stacked.mask_weights_()

    def set_member_masks(self, masks: State) -> None:
        self.stacked.set_masks(masks)
