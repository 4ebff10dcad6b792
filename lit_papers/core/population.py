"""Populations: K independent networks trained at once in one process with `torch.func`.

`StackedMembers` holds the K members' parameters stacked along a new leading axis (one
`(K, *shape)` parameter per original parameter) and runs them with `vmap(functional_call)`:
one batched kernel per layer instead of K. Training is ordinary backprop on the sum of the
members' losses, whose gradient w.r.t. member k's slice is exactly member k's own gradient, and
the project's optimizers (SGD, Adam, AdamW) are elementwise, so a stacked optimizer step is K
independent steps. Member k therefore follows the same trajectory as a separate run built right
after `torch.manual_seed(seed_k)` and fed the same batches (up to float reassociation in the
batched matmuls).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .chunked_classifier import ChunkedClassifierModule
from .classifier import parent_args
from .figures import run_dir, save_figure


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
        self.stacked = nn.ParameterDict({_key(n): nn.Parameter(p.detach().clone())
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

    def forward(self, x: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        """x: (B, ...) shared by all members, or with `per_member` (K, B, ...) -> logits (K, B, C)."""
        template = self._template[0]
        template.train(self.training)

        def one(params, buffers, xb):
            return functional_call(template, (params, buffers), (xb,))

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


class PopulationModule(ChunkedClassifierModule):
    """`population` independent classifiers of one architecture trained in one process.

    Every member sees the same batches and differs by its initialisation seed; it is the run that
    `ClassifierModule` with `seed_everything: <its seed>` would train alone (a test checks it).
    Per-member metrics are logged as `pop/<k>/{train,val,test}/{loss,acc}`, the plain keys
    (`val/acc`, ...) hold member means, `{val,test}/ensemble_{nll,acc}` score the members' averaged
    softmax (an ensemble of independently trained networks, FGE's baseline), and `members.json` in
    the run folder holds each member's seed, final and best metrics and the ensemble's.
    `member_state_dict(k)` extracts one member as a normal network.

    Args (besides ChunkedClassifierModule's):
        population: number of members K.
        member_seeds: one seed per member; default run seed + k (member 0 = the single run).
    """

    #: log the members' averaged prediction as `{val,test}/ensemble_{nll,acc}`
    ensemble_metrics = True

    def __init__(self, arch: str = "lenet300_100", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optimizer: str = "adam", lr: float = 1.2e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False, lr_schedule: str = "constant",
                 milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1,
                 step_capture: str = "none", steps_per_call: int = 1, population: int = 4,
                 member_seeds: Optional[list[int]] = None):
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        if member_seeds is not None and len(member_seeds) != population:
            raise ValueError(f"member_seeds has {len(member_seeds)} seeds for population={population}; "
                             "give one seed per member or leave it unset (run seed + k)")
        super().__init__(**parent_args(ChunkedClassifierModule, locals()))
        self._best: dict[int, dict] = {}  # member -> its best validation epoch
        self._last: dict[str, dict[str, list[float]]] = {}  # stage -> metric -> per-member value
        self._history: list[tuple[int, list[float]]] = []  # (epoch, per-member val acc)
        self._ensemble: dict[str, dict[str, float]] = {}  # stage -> ensemble_nll / ensemble_acc

    @property
    def num_members(self) -> int:
        return int(self.hparams.population)

    def resolved_seeds(self) -> list[int]:
        hp = self.hparams
        if hp.get("member_seeds") is not None:
            return [int(s) for s in hp.member_seeds]
        base = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return [base + k for k in range(hp.population)]

    def build_member(self) -> nn.Module:
        """One member network, built from the global RNG (seeded per member by `StackedMembers`);
        override to change how members are made (e.g. their initialisation)."""
        return super().build_network()

    def build_network(self) -> StackedMembers:
        hp = self.hparams
        seeds = self.resolved_seeds()
        hp.member_seeds = seeds  # stored with checkpoints, so a reload rebuilds the same members
        return StackedMembers(self.build_member, seeds)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        wanted = getattr(dm, "num_members", None)
        if wanted is not None and wanted != self.num_members:
            raise ValueError(f"the datamodule holds labels for {wanted} members but model.population is "
                             f"{self.num_members}; make them equal")

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights, loadable into the plain architecture (`build_model(arch, ...)`)."""
        return self.net.member_state_dict(k)

    def set_member_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Prunes members: name -> (K, *shape) bool masks (True = kept), kept at exactly zero through
        training (gradients masked before, weights after every optimizer step, captured or not)."""
        self.net.set_masks(masks)

    def before_optimizer_step(self) -> None:
        self.net.mask_grads_()

    def after_optimizer_step(self) -> None:
        self.net.mask_weights_()

    # -- the members as an ensemble -------------------------------------------------------------
    def _eval_step(self, stage: str, batch) -> torch.Tensor:
        logits = super()._eval_step(stage, batch)
        y = batch[1]
        if self.ensemble_metrics and y.dim() == 1:  # shared labels: score the averaged prediction too
            nll, correct = ensemble_stats(logits, y)
            sums = self._sums.setdefault(f"{stage}_ensemble", [torch.zeros_like(nll), torch.zeros_like(correct), 0])
            sums[0] += nll
            sums[1] += correct
            sums[2] += len(y)
        return logits

    def _finish_eval(self, stage: str) -> None:
        super()._finish_eval(stage)
        sums = self._sums.pop(f"{stage}_ensemble", None)
        if sums is None or sums[2] == 0:
            return
        values = {"ensemble_nll": sums[0] / sums[2], "ensemble_acc": sums[1].float() / sums[2]}
        self.log_dict({f"{stage}/{name}": v for name, v in values.items()})
        self._ensemble[stage] = {name: float(v) for name, v in values.items()}

    # -- per-member records --------------------------------------------------------------------
    def _log_members(self, stage: str, values: dict[str, torch.Tensor], means: Sequence[str]) -> None:
        super()._log_members(stage, values, means)
        record = {name: [float(v) for v in t.detach().cpu()] for name, t in values.items()}
        self._last[stage] = record
        if stage == "val" and not self.trainer.sanity_checking:
            self._history.append((self.current_epoch, record["acc"]))
            for k, acc in enumerate(record["acc"]):
                if acc > self._best.get(k, {}).get("val/acc", -1.0):
                    self._best[k] = {"val/acc": acc, "val/loss": record["loss"][k],
                                     "epoch": self.current_epoch, "step": self.global_step}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # per-member records live outside the weights: keep them so a resumed fit reports the
        # same best epochs and curves as an uninterrupted one
        checkpoint["population_records"] = {"best": self._best, "last": self._last, "history": self._history}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.net is not None:
            self.net.ensure_mask_buffers(checkpoint.get("state_dict", {}), prefix="net.")
        records = checkpoint.get("population_records", {})
        self._best = {int(k): v for k, v in records.get("best", {}).items()}
        self._last = dict(records.get("last", {}))
        self._history = [(int(e), list(a)) for e, a in records.get("history", [])]

    def on_fit_end(self) -> None:
        self.write_members()
        if self._history:
            save_figure(self.trainer, members_figure(self._history, self.member_labels()), "members_val_acc")

    def on_test_end(self) -> None:
        self.write_members()

    def member_labels(self) -> list[str]:
        """Legend names: the label-corruption level when members differ by it, else the seed."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        probs = getattr(dm, "member_probs", None)
        if probs is not None:
            return [f"labels p={p:g}, seed {s}" for p, s in zip(probs, self.resolved_seeds())]
        return [f"seed {s}" for s in self.resolved_seeds()]

    def members(self) -> list[dict]:
        """One record per member: seed, last logged metrics per stage, best validation epoch."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        probs = getattr(dm, "member_probs", None)  # per-member label corruption, if any
        out = []
        for k, seed in enumerate(self.resolved_seeds()):
            final = {f"{stage}/{name}": vals[k] for stage, rec in self._last.items()
                     for name, vals in rec.items()}
            record = {"member": k, "seed": seed, "final": final, "best": self._best.get(k, {}),
                      "val_acc_by_epoch": {str(e): accs[k] for e, accs in self._history}}
            if probs is not None:
                record["labels"] = {"corruption": dm.member_corruption, "prob": probs[k]}
            out.append(record)
        return out

    def write_members(self) -> Optional[str]:
        """Writes `members.json` into the run folder (none without one, e.g. in tests)."""
        folder = run_dir(self.trainer)
        if folder is None or not self.trainer.is_global_zero:
            return None
        hp = self.hparams
        data = {"population": hp.population, "arch": hp.arch, "optimizer": hp.optimizer, "lr": hp.lr,
                "ensemble": self._ensemble, "members": self.members()}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "members.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(folder / "members.json")
        return str(folder / "members.json")


def ensemble_stats(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and correct count of the members' averaged prediction, p = mean_k softmax(logits_k).

    logits (K, B, C), y (B,). log p is computed as logsumexp_k log_softmax - log K (no underflow);
    by Jensen's inequality its NLL never exceeds the members' mean NLL.
    """
    log_p = torch.logsumexp(logits.float().log_softmax(-1), dim=0) - math.log(logits.shape[0])  # (B, C)
    return -log_p.gather(1, y[:, None]).sum(), (log_p.argmax(-1) == y).sum()


def members_figure(history: Sequence[tuple[int, Sequence[float]]], labels: Sequence[str]):
    """Validation accuracy of every member (legend `labels`) against the epoch, with the mean."""
    import matplotlib.pyplot as plt

    epochs = [e for e, _ in history]
    accs = torch.tensor([list(a) for _, a in history])  # (epochs, K)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for k, label in enumerate(labels):
        ax.plot(epochs, accs[:, k], alpha=0.6, lw=1, label=label if len(labels) <= 8 else None)
    ax.plot(epochs, accs.mean(1), color="black", lw=2, label="member mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.set_title(f"population of {len(labels)} (one process)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
