"""Exact binary masks over a network's prunable weights.

Mechanism (chosen so that pruned weights are *exactly* 0.0 everywhere, including saved
checkpoints, which forward-only masking does not give):

1. masks live as boolean buffers of a ``MaskSet`` module, so they are part of the
   LightningModule's ``state_dict`` (saved, restored, moved to the device, broadcast by DDP);
   parameter names and ``state_dict`` keys of the network are left untouched (unlike
   ``torch.nn.utils.prune``, which renames ``weight`` to ``weight_orig``);
2. gradients of pruned entries are zeroed after backward, before the optimizer step: with a
   zero gradient and zero optimizer state, SGD momentum/Nesterov buffers, Adam moments and
   (decoupled or coupled) weight decay all leave a zero weight at zero;
3. the weights are re-masked after every optimizer step, which makes the guarantee independent
   of the optimizer's internals (e.g. eps tricks, AMP unscaling, custom optimizers);
4. optimizer state tensors shaped like a masked parameter can be masked too (used when an
   existing optimizer survives a change of mask).

Steps 2 and 3 multiply by a derived 0/1 copy of the mask in the weights' dtype (a non-persistent
buffer, refreshed whenever the masks change or a state dict is loaded): ``masked_fill_`` is not
vectorised on a CPU and took as long as a LeNet-300-100 training step itself (5.6 of 11.4 ms;
the multiplication takes ~0.2 ms). Pruned entries become +-0.0; a non-finite gradient there (an
fp16 overflow) makes the step skipped by the grad scaler or the run fail by NonFiniteGuard either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

PRUNABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(net: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every Linear/Conv layer of ``net``, in module order, keyed by parameter name.

    Biases, BatchNorm affine parameters and anything else are never pruned.
    """
    found = {}
    for prefix, layer in net.named_modules():
        if isinstance(layer, PRUNABLE_LAYERS):
            found[f"{prefix}.weight" if prefix else "weight"] = layer.weight
    if not found:
        raise ValueError(f"{type(net).__name__} has no Linear/Conv layer to prune")
    return found


def output_layer_name(weights: Mapping[str, Tensor]) -> str:
    """The output layer: the last prunable 2-D (Linear) weight in module order."""
    linear = [name for name, w in weights.items() if w.dim() == 2]
    return linear[-1] if linear else list(weights)[-1]


def check_rates(strategy: str, rate: float, conv_rate: float | None = None,
                output_rate: float | None = None) -> None:
    """The per-round pruning rates a module was given, checked without building the network:
    each in [0, 1); under `global` pruning (one threshold) every non-zero rate equal."""
    for label, value in (("prune_rate", rate), ("conv_prune_rate", conv_rate),
                         ("output_prune_rate", output_rate)):
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"model.{label} must be in [0, 1) (a fraction of the surviving weights "
                             f"pruned per round), got {value}")
    if strategy != "global":
        return
    used = {"prune_rate": rate, "conv_prune_rate": rate if conv_rate is None else conv_rate,
            "output_prune_rate": rate / 2 if output_rate is None else output_rate}
    if len({v for v in used.values() if v > 0}) > 1:
        default = " (by default half of prune_rate)" if output_rate is None else ""
        raise ValueError(f"strategy global prunes all layers at one rate, but the rates differ: {used}{default}. "
                         f"Set --model.output_prune_rate={rate} (or 0 to leave the output layer dense) and "
                         f"conv_prune_rate to {rate} or 0, or use --model.strategy=layerwise")


def layer_rates(net: nn.Module, rate: float, conv_rate: float | None = None,
                output_rate: float | None = None) -> dict[str, float]:
    """Per-layer pruning fractions (of surviving weights, per round).

    Linear layers get ``rate``, conv layers ``conv_rate`` (default ``rate``) and the output
    layer ``output_rate`` (default ``rate / 2``, the paper's half rate for the output layer).
    """
    for label, value in (("rate", rate), ("conv_rate", conv_rate), ("output_rate", output_rate)):
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"pruning {label} must be in [0, 1), got {value}")
    weights = prunable_weights(net)
    conv_rate = rate if conv_rate is None else conv_rate
    rates = {name: (rate if w.dim() == 2 else conv_rate) for name, w in weights.items()}
    rates[output_layer_name(weights)] = rate / 2 if output_rate is None else output_rate
    return rates


def _buffer_name(param_name: str) -> str:
    # buffer names may not contain "."; "features.0.weight" -> "features__0__weight"
    return param_name.replace(".", "__")


class MaskSet(nn.Module):
    """One boolean mask per prunable weight (True = kept), stored as buffers.

    Args:
        weights: parameter name -> weight tensor; a mask of ones with the same shape is made.
    """

    def __init__(self, weights: Mapping[str, Tensor]):
        super().__init__()
        self.names: list[str] = list(weights)
        if len({_buffer_name(n) for n in self.names}) != len(self.names):
            raise ValueError(f"parameter names collide once '.' is replaced: {self.names}")
        for name, w in weights.items():
            self.register_buffer(_buffer_name(name), torch.ones_like(w, dtype=torch.bool))
            # derived: the mask as 0/1 in the weight's dtype, for the per-step multiplications
            self.register_buffer("keep__" + _buffer_name(name), torch.ones_like(w.detach()), persistent=False)
        self.register_load_state_dict_post_hook(self._refresh_keep)

    @torch.no_grad()
    def _refresh_keep(self, *_) -> None:
        for name in self.names:
            self._keep(name).copy_(self[name])

    def _keep(self, name: str) -> Tensor:
        return getattr(self, "keep__" + _buffer_name(name))

    def __getitem__(self, name: str) -> Tensor:
        return getattr(self, _buffer_name(name))

    def items(self) -> Iterable[tuple[str, Tensor]]:
        return ((name, self[name]) for name in self.names)

    def as_dict(self) -> dict[str, Tensor]:
        """A detached copy of the masks, keyed by parameter name."""
        return {name: m.clone() for name, m in self.items()}

    @torch.no_grad()
    def load_(self, masks: Mapping[str, Tensor]) -> None:
        """Copy ``masks`` (same names and shapes) into the buffers."""
        if set(masks) != set(self.names):
            raise ValueError(f"mask names differ: expected {self.names}, got {sorted(masks)}")
        for name, m in masks.items():
            self[name].copy_(m.to(torch.bool))
        self._refresh_keep()

    def kept_counts(self) -> dict[str, int]:
        """Number of kept (unpruned) entries per layer."""
        return {name: int(m.sum()) for name, m in self.items()}

    def density(self) -> float:
        """Fraction of prunable weights kept, in [0, 1]."""
        kept = sum(int(m.sum()) for _, m in self.items())
        return kept / sum(m.numel() for _, m in self.items())

    @torch.no_grad()
    def apply_to_weights_(self, params: Mapping[str, Tensor]) -> None:
        """Set pruned weights to exactly 0.0."""
        for name in self.names:
            params[name].mul_(self._keep(name))

    @torch.no_grad()
    def apply_to_grads_(self, params: Mapping[str, Tensor]) -> None:
        """Zero the gradients of pruned weights (no-op for params without a gradient)."""
        for name in self.names:
            if params[name].grad is not None:
                params[name].grad.mul_(self._keep(name))

    @torch.no_grad()
    def apply_to_optimizer_state_(self, optimizer: torch.optim.Optimizer,
                                  params: Mapping[str, Tensor]) -> None:
        """Zero every optimizer state tensor (momentum, Adam moments) at pruned positions."""
        for name, m in self.items():
            for value in optimizer.state.get(params[name], {}).values():
                if torch.is_tensor(value) and value.shape == m.shape:
                    value.masked_fill_(~m, 0.0)
