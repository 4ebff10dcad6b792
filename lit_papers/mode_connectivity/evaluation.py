"""Loss and error along a path in weight space (curve or segment), with the paper's summaries."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .batchnorm import has_batchnorm, recompute_bn
from .curves import flatten, l2_penalty

Batches = Iterable[tuple[Tensor, Tensor]]


@torch.no_grad()
def evaluate_weights(net: nn.Module, weights: Mapping[str, Tensor], splits: Mapping[str, Batches],
                     bn_data: Batches | None = None) -> dict[str, dict[str, float]]:
    """NLL, error (%) and accuracy of `net` run at `weights` on each named split of `splits`.

    BatchNorm statistics are recomputed on `bn_data` (the training data) first, always: they
    are shared buffers and are stale for any weights but the ones they were computed at.
    """
    device = next(iter(weights.values())).device
    forward = lambda x: functional_call(net, dict(weights), (x,))
    if has_batchnorm(net):
        if bn_data is None:
            raise ValueError("the network has BatchNorm: pass bn_data (training batches) to recompute it")
        recompute_bn(net, forward, bn_data)
    was_training = net.training
    net.eval()
    out = {}
    for split, data in splits.items():
        nll, correct, count = 0.0, 0, 0
        for x, y in data:
            x, y = x.to(device), y.to(device)
            logits = forward(x)
            nll += F.cross_entropy(logits.float(), y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
            count += y.numel()
        acc = correct / count
        out[split] = {"nll": nll / count, "err": 100.0 * (1.0 - acc), "acc": acc}
    net.train(was_training)
    return out


@torch.no_grad()
def evaluate_path(net: nn.Module, weights_fn: Callable[[float], Mapping[str, Tensor]], ts: Sequence[float],
                  train: Batches, test: Batches, weight_decay: float = 0.0) -> dict[str, np.ndarray]:
    """Evaluate the path t -> weights_fn(t) at every t of `ts`.

    Returns arrays over t: `t`, `train_loss` (NLL + 0.5 wd ||w||^2, the training objective),
    `train_nll`, `train_err`, `test_nll`, `test_err` (errors in %) and `dl` (the length
    ||w(t_i) - w(t_{i-1})|| of each step, 0 at the first point).
    """
    keys = ("t", "train_loss", "train_nll", "train_err", "test_nll", "test_err", "dl")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    previous = None
    for t in ts:
        weights = weights_fn(float(t))
        flat = flatten(weights).double()
        result = evaluate_weights(net, weights, {"train": train, "test": test}, bn_data=train)
        tr, te = result["train"], result["test"]
        rows["t"].append(float(t))
        rows["train_nll"].append(tr["nll"])
        rows["train_loss"].append(tr["nll"] + 0.5 * weight_decay * l2_penalty(weights).item())
        rows["train_err"].append(tr["err"])
        rows["test_nll"].append(te["nll"])
        rows["test_err"].append(te["err"])
        rows["dl"].append(0.0 if previous is None else torch.linalg.vector_norm(flat - previous).item())
        previous = flat
    return {k: np.asarray(v) for k, v in rows.items()}


def summarize(values: np.ndarray, dl: np.ndarray) -> dict[str, float]:
    """start/end/min/max/mean, the length-weighted integral (trapezoid rule, divided by the
    path length) and the barrier height = max - mean of the two endpoints."""
    length = float(dl[1:].sum())
    trapezoids = 0.5 * (values[:-1] + values[1:]) * dl[1:]
    integral = float(trapezoids.sum() / length) if length > 0 else float("nan")
    return {
        "start": float(values[0]), "end": float(values[-1]),
        "min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
        "integral": integral,
        "barrier": float(values.max() - 0.5 * (values[0] + values[-1])),
    }


def path_metrics(path: Mapping[str, np.ndarray], prefix: str) -> dict[str, float]:
    """Flat metric dict, e.g. `curve/train_loss_max`, `segment/train_loss_barrier`, `curve/length`."""
    out = {f"{prefix}/length": float(path["dl"].sum())}
    for key in ("train_loss", "train_nll", "train_err", "test_nll", "test_err"):
        for stat, value in summarize(path[key], path["dl"]).items():
            out[f"{prefix}/{key}_{stat}"] = value
    return out
