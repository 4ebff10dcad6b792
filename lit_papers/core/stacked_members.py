"""`StackedMembers`: K networks of one architecture with stacked weights, run by one `vmap`.

It holds the K members' parameters stacked along a new leading axis (one `(K, *shape)` parameter
per original parameter) and runs them with `vmap(functional_call)`: one batched kernel per layer
instead of K. Training is ordinary backprop on the sum of the members' losses, whose gradient
w.r.t. member k's slice is exactly member k's own gradient, and the project's optimizers (SGD,
Adam, AdamW) are elementwise, so a stacked optimizer step is K independent steps. Member k
therefore follows the same trajectory as a separate run built right after
`torch.manual_seed(seed_k)` and fed the same batches (up to float reassociation in the batched
matmuls). It is a plain `nn.Module`: any module can hold one as its network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def _key(name: str) -> str:
    return name.replace(".", "-")  # parameter/buffer names may not contain dots


class StackedMembers(nn.Module):
    """K copies of one architecture with independent weights, evaluated with one vmap.

    Args:
        build: makes one member network (called once per seed, right after seeding).
        seeds: one seed per member; member k is initialised under `torch.manual_seed(seeds[k])`
            without disturbing the caller's RNG state.
    """

    def __init__(self, build: Callable[[], nn.Module], seeds: Sequence[int]):
        super().__init__()
        if len(seeds) < 1:
            raise ValueError("a population needs at least one member seed")
        members = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                members.append(build())
        params, buffers = stack_module_state(members)  # name -> (K, *shape)
        self.names = list(params)
        self.buffer_names = list(buffers)
        # a member's frozen parameters (requires_grad False) stay frozen in the stack
        self.stacked = nn.ParameterDict({_key(n): nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                                         for n, p in params.items()})
        for name, value in buffers.items():
            self.register_buffer(f"stacked-{_key(name)}", value.clone())
        # The template only supplies the forward code: keep it off the module tree (no parameters,
        # no state_dict entries, nothing to move between devices).
        self._template = [members[0].to("meta")]
        self.num_members = len(seeds)
        self.register_load_state_dict_post_hook(self._refresh_keep)

    def member_params(self) -> dict[str, torch.Tensor]:
        return {n: self.stacked[_key(n)] for n in self.names}

    def member_buffers(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, f"stacked-{_key(n)}") for n in self.buffer_names}

    def forward(self, x: torch.Tensor, *args, per_member: bool = False) -> torch.Tensor:
        """x: (B, ...) shared by all members, or with `per_member` (K, B, ...) -> logits (K, B, C).

        Further positional `args` go to every member's forward unchanged (e.g. a curve's t).
        """
        template = self._template[0]
        template.train(self.training)

        def one(params, buffers, xb):
            return functional_call(template, (params, buffers), (xb, *args))

        return vmap(one, in_dims=(0, 0, 0 if per_member else None), randomness="different")(
            self.member_params(), self.member_buffers(), x)

    # -- per-member weight masks (pruning) -------------------------------------------------------
    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Per-member binary masks, name -> (K, *shape) bool (True = kept), for any parameters.

        Stored as `pruned-<name>` bool buffers (saved with checkpoints) plus a derived 0/1 `keep-<name>`
        buffer in the parameter's dtype, both updated in place when set again, so a captured training
        step keeps using them. Masked weights are zeroed now; call `mask_grads_` / `mask_weights_`
        around every optimizer step to keep them at zero.
        """
        params = self.member_params()
        for name, mask in masks.items():
            if name not in params or mask.shape != params[name].shape:
                raise ValueError(f"mask {name!r}: expected a (K, *shape) mask for one of "
                                 f"{sorted(params)} of shape {tuple(params.get(name, torch.empty(0)).shape)}")
            pruned = ~mask.to(device=params[name].device, dtype=torch.bool)
            key = f"pruned-{_key(name)}"
            if not hasattr(self, key):
                self._add_mask_buffers(name, pruned)
            getattr(self, key).copy_(pruned)
        self._refresh_keep()
        self.mask_weights_()

    def _add_mask_buffers(self, name: str, like: torch.Tensor) -> None:
        self.register_buffer(f"pruned-{_key(name)}", torch.zeros_like(like, dtype=torch.bool))
        weight = self.stacked[_key(name)]
        self.register_buffer(f"keep-{_key(name)}", torch.ones_like(weight), persistent=False)

    @torch.no_grad()
    def _refresh_keep(self, *_) -> None:
        """keep = not pruned, in place (after set_masks and after loading a state dict)."""
        for name in self.names:
            if hasattr(self, f"pruned-{_key(name)}"):
                getattr(self, f"keep-{_key(name)}").copy_(~getattr(self, f"pruned-{_key(name)}"))

    def _keep(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(p, getattr(self, f"keep-{_key(n)}")) for n, p in self.member_params().items()
                if hasattr(self, f"keep-{_key(n)}")]

    # Multiplying by the 0/1 mask rather than masked_fill_: ~35x faster on a CPU (masked_fill_ is
    # not vectorised there), the same on a GPU. Pruned entries become +-0.0; a non-finite value
    # there would mean the run has diverged, which NonFiniteGuard reports.
    @torch.no_grad()
    def mask_grads_(self) -> None:
        for p, keep in self._keep():
            if p.grad is not None:
                p.grad.mul_(keep)

    @torch.no_grad()
    def mask_weights_(self) -> None:
        for p, keep in self._keep():
            p.mul_(keep)

    def ensure_mask_buffers(self, state_dict: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Creates the mask buffers a checkpoint holds, so it loads into a fresh module (the derived
        `keep-*` buffers are refreshed by a load hook once the state dict is in)."""
        for key, value in state_dict.items():
            if key.startswith(prefix + "pruned-") and not hasattr(self, key[len(prefix):]):
                key = key[len(prefix) + len("pruned-"):]
                self._add_mask_buffers(next(n for n in self.names if _key(n) == key), value)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k as an ordinary `state_dict` of the architecture (load it into `build()`)."""
        if not 0 <= k < self.num_members:
            raise ValueError(f"member index must be in [0, {self.num_members}), got {k}")
        out = {n: t[k].detach().clone() for n, t in self.member_params().items()}
        out.update({n: t[k].clone() for n, t in self.member_buffers().items()})
        return out
