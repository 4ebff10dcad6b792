"""`ChunkedSteps`: S optimizer steps per Lightning `training_step`, eager, compiled or captured.

A part that a LightningModule holds, not a base class: the module keeps its own loss and networks,
and its `training_step`, `configure_optimizers` and `setup` hand over to the part (`PartSteps`
below is those four lines, mixed into `ChunkedClassifierModule` and `PopulationModule`). What the
part asks of the module (the seam):

- `member_losses(x, y) -> (losses (K,), correct (K,))`: the differentiable mean loss and the
  correct count of each of its K members on one minibatch (K = 1 for one network), and
  `num_members` (K);
- `automatic_optimization = False`, `hparams.input_shape` (one sample's shape, to tell a grouped
  batch from a plain one), and a `configure_optimizers` that passes what it builds through
  `ChunkedSteps.configure_optimizers`, its schedule over `total_optimizer_steps` optimizer steps;
- optionally Lightning's own hooks `on_before_optimizer_step(optimizer)` (between backward and the
  step; e.g. masking gradients) and `optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)`
  (code after `super().optimizer_step(...)` runs right after the step; e.g. re-masking weights). The
  part calls them itself around every step, inside a captured step too (tensor ops only, no host
  syncs). Callbacks' step hooks and precision plugins do not run: steps are fp32 on one device.

`after_step`, a host-side callable set on the part, runs after every optimizer step outside any
graph, with `global_step` already counting that step; returning False skips the call's remaining
minibatches (e.g. a level of a lottery study ended inside the chunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from typing import Optional

import torch

from .member_metrics import MemberSums
from .optim import configure_from_hparams
from .step_capture import STEP_CAPTURE, GraphStep, make_capturable, resolve_capture
from .step_chunks import StepChunks

_CAPTURABLE = ("adam", "adamw")  # optimizers whose step takes a tensor lr inside a CUDA graph


class PartSteps:
    """Mixin for a LightningModule whose steps are its `self.stepper` (a `ChunkedSteps`, with
    `automatic_optimization = False`): Lightning's hooks handed to the part, and the optimizer built
    from the module's `optim` group. Put it before the LightningModule base."""

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.stepper.setup(self.trainer, stage)

    def check_trainer(self, trainer) -> None:
        self.stepper.check_trainer(self, trainer)

    def configure_optimizers(self):
        return self.stepper.hparams_optimizers(self)

    def training_step(self, batch, batch_idx: int) -> None:
        self.stepper.training_step(self, batch, batch_idx)


def _capturable(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))


def _keep_stepping() -> bool:
    return True  # a module-level function, not a lambda: the part stays picklable


@contextmanager
def counted_step(optimizer):
    """Counts one optimizer step in Lightning's progress (`global_step`, `max_steps`, the loggers'
    step) around a step taken on the raw optimizer.

    `LightningOptimizer.step` is the public way, but it also runs the step through the precision
    plugin and the callbacks' hooks, which a replayed CUDA graph cannot do; its two counting
    halves are the only private Lightning attributes the step paths use, kept here in one place.
    """
    optimizer._on_before_step()
    yield
    optimizer._on_after_step()


class ChunkedSteps:
    """Runs `steps_per_call` optimizer steps per `training_step` of the module that holds it.

    Args:
        step_capture: `none` (eager), `cuda_graph` (whole step captured once and replayed) or
            `compile` (`torch.compile(mode="reduce-overhead")` loss); CPU runs fall back to `none`.
        steps_per_call: minibatches per `training_step`; the datamodule groups them (StepChunks).
            Lightning's step counters (`global_step`, `max_steps`) count optimizer steps;
            `limit_train_batches` counts groups.

    Logs `train/loss` once per call (mean of its steps); `epoch_values()` gives the members' epoch
    means of the training loss and accuracy.
    """

    def __init__(self, step_capture: str = "none", steps_per_call: int = 1):
        STEP_CAPTURE.get(step_capture)  # fail fast, listing the modes
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        self.step_capture, self.steps_per_call = step_capture, steps_per_call
        self.mode = "none"  # resolved against the device in configure_optimizers
        self.after_step: Callable[[], bool] = _keep_stepping
        self.graph: Optional[GraphStep] = None
        self._compiled = None
        self._call: Optional[list] = None  # per-call sums (loss, correct), persistent device tensors
        self._sums = MemberSums()

    # -- wiring: setup, trainer checks, optimizers -----------------------------------------------
    def setup(self, trainer, stage: str) -> None:
        """Makes the datamodule group `steps_per_call` minibatches per batch (when it can)."""
        dm = getattr(trainer, "datamodule", None)
        if stage == "fit" and dm is not None and hasattr(dm, "batch_grouping"):
            steps = self.steps_per_call
            dm.batch_grouping = partial(StepChunks, steps=steps) if steps > 1 else None

    def check_trainer(self, module, trainer) -> None:
        """One device, full precision; the CLI calls it before the run folder exists."""
        name = type(module).__name__
        if trainer.world_size > 1:
            alternative = getattr(module, "ddp_alternative", "ClassifierModule")
            raise ValueError(f"{name} trains on one device (several backward passes per "
                             f"training_step); use {alternative} under DDP")
        if str(trainer.precision) not in ("32-true", "32"):
            raise ValueError(f"{name} steps the optimizer itself and needs "
                             f"trainer.precision=32-true, got {trainer.precision}")

    def configure_optimizers(self, module, configured):
        """Readies what the module's `configure_optimizers` built (one optimizer, or Lightning's dict
        with one optimizer and a per-step `lr_scheduler`) for the capture mode; returns it as is.

        Build a schedule over `total_optimizer_steps(trainer)`: Lightning's estimate counts calls.
        """
        self.mode = resolve_capture(self.step_capture, module.device)
        check = getattr(module, "check_trainer", None)  # the module's own checks include the part's
        if callable(check):
            check(module.trainer)
        else:
            self.check_trainer(module, module.trainer)
        opt = configured["optimizer"] if isinstance(configured, dict) else configured
        if self.mode == "cuda_graph" and not _capturable(opt) and isinstance(configured, dict) \
                and configured.get("lr_scheduler") is not None:
            raise ValueError(f"step_capture=cuda_graph with optimizer={type(opt).__name__.lower()!r} needs "
                             f"optim.schedule=constant (its lr is baked into the graph); use one of "
                             f"{_CAPTURABLE} or step_capture=compile")
        self.graph = None  # a captured step belongs to one optimizer: a new fit captures anew
        if self.mode == "cuda_graph" and _capturable(opt):
            make_capturable(opt, module.device)
        if self.mode == "compile" and self._compiled is None:
            self._compiled = torch.compile(module.member_losses, mode="reduce-overhead")
        return configured

    def hparams_optimizers(self, module):
        """`configure_optimizers` for a module whose optimizer block is in its hparams: built by
        `configure_from_hparams` with the schedule counted in optimizer steps, readied as above."""
        total = partial(self.total_optimizer_steps, module.trainer)  # optimizer steps, not calls
        return self.configure_optimizers(module, configure_from_hparams(module, total_steps=total))

    @staticmethod
    def total_optimizer_steps(trainer) -> int:
        """Optimizer steps of the whole fit (the schedule's length), counting grouped minibatches."""
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps)
        calls = trainer.estimated_stepping_batches  # loads the train loader: calls * epochs
        if not math.isfinite(calls):
            raise ValueError("a non-constant optim.schedule needs trainer.max_epochs or trainer.max_steps")
        loader = trainer.train_dataloader
        if isinstance(loader, StepChunks):
            return max(loader.minibatches(trainer.num_training_batches) * trainer.max_epochs, 1)
        return max(int(calls), 1)

    # -- training ----------------------------------------------------------------------------
    def training_step(self, module, batch, batch_idx: int) -> None:
        """Steps the module's optimizer once per minibatch of `batch` ((S, B, ...) or one (B, ...))."""
        x, y = batch
        if x.dim() == len(module.hparams.input_shape) + 1:  # one plain minibatch: a group of one
            x, y = x[None], y[None]
        opt, sched = module.optimizers(), module.lr_schedulers()
        call = self._zeroed(module)
        steps = 0
        for s in range(x.shape[0]):  # x: (S, B, ...)
            with counted_step(opt):
                self._step(module, opt.optimizer, x[s], y[s], call, batch_idx)
            if sched is not None:
                sched.step()
            steps += 1
            if not self.after_step():
                break
        self._sums.add_steps("train", call[0], call[1], steps * x.shape[1], steps)
        module.log("train/loss", call[0].mean() / steps, on_step=True, on_epoch=True, prog_bar=True,
                   batch_size=steps)

    def epoch_values(self) -> Optional[dict[str, torch.Tensor]]:
        """The members' training loss (mean over steps) and accuracy of the epoch; clears them."""
        return self._sums.pop("train")

    def _zeroed(self, module) -> list:
        sums = self._call
        if sums is None or sums[0].device != module.device:
            k = module.num_members
            sums = [torch.zeros(k, device=module.device), torch.zeros(k, device=module.device, dtype=torch.long)]
            self._call = sums
        for t in sums:
            t.zero_()
        return sums

    def _closure(self, module, optimizer, loss_fn, x, y, call) -> Callable[[], torch.Tensor]:
        """Forward and backward of one minibatch, then the module's `on_before_optimizer_step`."""
        def closure() -> torch.Tensor:
            losses, correct = loss_fn(x, y)
            with torch.no_grad():
                call[0].add_(losses.detach())
                call[1].add_(correct)
            loss = losses.sum()  # members are independent: d(sum)/d(theta_k) = d(loss_k)/d(theta_k)
            loss.backward()
            module.on_before_optimizer_step(optimizer)
            return loss

        return closure

    def _step(self, module, raw, x: torch.Tensor, y: torch.Tensor, call: list, batch_idx: int) -> None:
        """One optimizer step through the module's `optimizer_step`, on the raw optimizer."""
        if self.mode == "cuda_graph":
            self._graph_step(module, raw, x, y, call, batch_idx)
            return
        loss_fn = self._compiled if self.mode == "compile" else module.member_losses
        raw.zero_grad(set_to_none=True)
        module.optimizer_step(module.current_epoch, batch_idx, raw,
                              self._closure(module, raw, loss_fn, x, y, call))

    def _graph_step(self, module, raw, x: torch.Tensor, y: torch.Tensor, call: list, batch_idx: int) -> None:
        def step(xs, ys):
            module.optimizer_step(module.current_epoch, batch_idx, raw,
                                  self._closure(module, raw, module.member_losses, xs, ys, call))

        if self.graph is None:
            if _capturable(raw):
                make_capturable(raw, module.device)  # again: a resumed checkpoint restores old groups
            tensors = [*module.parameters(), *module.buffers(), *call]
            self.graph = GraphStep(step, raw, tensors, x, y)
        if self.graph.fits(x):
            self.graph(x, y)
        else:  # a differently shaped minibatch (the short last one): same math, eagerly
            raw.zero_grad(set_to_none=True)
            step(x, y)
