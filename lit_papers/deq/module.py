"""`DEQModule`: image classification with a deep equilibrium layer, trained by Lightning."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.core import ClassifierModule, save_figure
from lit_papers.core.optim import Optim
from lit_papers.core.settings import keep_groups

from .figures import iterations_figure, residual_figure
from .jacobian import spectral_radius
from .metrics import SolverLogging
from .network import DEQNet
from .settings import Backward, JacobianPenalty, Solver, layer_kwargs
from .solvers import SOLVERS


class DEQModule(SolverLogging, ClassifierModule):
    """A DEQ classifier: stem -> z* = cell(z*, injection) -> head, gradients by the implicit hook.

    Args:
        cell: "conv" (MDEQ-style block with group norm), "multiscale" (MDEQ's joint equilibrium of
            `branches` resolutions, default 2, branch i with width * 2**i channels) or "mlp";
            width: state channels;
            hidden: inner width of the cell (default width); groups: group-norm groups;
            weight_norm: weight-normalise the cell's two linear maps; downsample: stride-2
            stages in the conv stem; pool: pooled grid size of the conv head.
        solver: the forward root finder (`Solver`: name, max_iter, tol, stop_mode, kwargs,
            eval_max_iter).
        backward: how gradients pass the equilibrium (`Backward`: mode ift/phantom/unroll, the ift
            hook's solver, max_iter, tol, kwargs; phantom_steps, phantom_tau; unroll_steps).
        jacobian: the Hutchinson ||J||_F^2 penalty (`JacobianPenalty`: weight, freq, probes).
        pretrain_steps, pretrain_depth: the first steps train a weight-tied stack of that depth.
        figure_max_iter: iterations per solver in the end-of-fit residual-vs-iteration figure.
        optim: the optimizer and its schedule (`Optim`), as in `ClassifierModule`.
    """

    def __init__(self, cell: str = "conv", width: int = 32, hidden: Optional[int] = None, groups: int = 8,
                 weight_norm: bool = True, downsample: int = 2, pool: int = 1, branches: Optional[int] = None,
                 solver: Solver = Solver(), backward: Backward = Backward(),
                 jacobian: JacobianPenalty = JacobianPenalty(),
                 pretrain_steps: int = 0, pretrain_depth: int = 2, figure_max_iter: int = 60,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(lr=1e-3, schedule="cosine")):
        Solver.of(solver), Backward.of(backward), JacobianPenalty.of(jacobian)  # fail fast, naming the field
        if branches is not None and (cell != "multiscale" or branches < 1):
            raise ValueError(f"branches={branches}: the number of resolutions of cell=multiscale (>= 1); "
                             f"leave it unset for cell={cell!r}")
        super().__init__(arch="deq", arch_kwargs=None, num_classes=num_classes, input_shape=input_shape,
                         optim=optim)
        keep_groups(self, solver=Solver, backward=Backward, jacobian=JacobianPenalty)
        self.init_solver_history()

    def build_network(self) -> nn.Module:
        hp = self.hparams
        cell_kwargs = {"groups": hp.groups, "hidden": hp.hidden, "weight_norm": hp.weight_norm}
        if hp.get("branches") is not None:
            cell_kwargs["branches"] = hp.branches
        return DEQNet(
            tuple(hp.input_shape), hp.num_classes, cell=hp.cell, width=hp.width, downsample=hp.downsample,
            pool=hp.pool, cell_kwargs=cell_kwargs,
            **layer_kwargs(hp.solver, hp.backward, hp.jacobian, pretrain_depth=hp.pretrain_depth))

    # -- steps -------------------------------------------------------------------------------
    def deq_step(self, batch, compute_jac: bool = False):
        """(loss, logits, y, info) of one batch."""
        x, y = batch
        logits, info = self.net(x, return_info=True, compute_jac=compute_jac)
        return F.cross_entropy(logits, y), logits, y, info

    def model_step(self, batch):
        loss, logits, y, _ = self.deq_step(batch)
        return loss, logits, y

    @cached_property
    def jacobian(self) -> JacobianPenalty:
        """The `jacobian` group (hparams hold it as a dict), built once: every training step reads it."""
        return JacobianPenalty.of(self.hparams.jacobian)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.net.deq.pretraining = self.global_step < self.hparams.pretrain_steps

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        jac = self.jacobian
        compute_jac = jac.weight > 0 and not self.net.deq.pretraining and (
            jac.freq >= 1.0 or torch.rand(()).item() < jac.freq)
        loss, logits, y, info = self.deq_step(batch, compute_jac)
        self.train_acc(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log_forward(info, prefix="deq/")
        if info.jac_loss is not None:
            self.log("deq/jac_loss", info.jac_loss.detach())
            loss = loss + jac.weight * info.jac_loss
        self.remember(info)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y, info = self.deq_step(batch)
        self.val_acc(logits, y)
        self.log("val/loss", loss, sync_dist=True, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log_forward(info, prefix="deq/val_")
        if batch_idx == 0 and info.forward is not None:
            # rho(J_f(z*)) < 1 is what makes the backward system well posed.
            self.log("deq/spectral_radius", self.fixed_point_spectral_radius(batch[0], info.forward.z))

    def fixed_point_spectral_radius(self, x: torch.Tensor, z: torch.Tensor, n_iter: int = 10) -> torch.Tensor:
        """Batch mean of the power-iteration estimate of rho(J_f(z)) for the fixed-point map of x.

        The estimate needs autograd (VJPs), also where Lightning evaluates under inference mode
        (`Trainer.validate` / `test`): it leaves inference mode and enables grad, and works on
        clones, since inference tensors cannot enter autograd.
        """
        with torch.inference_mode(False), torch.enable_grad():
            f, _ = self.cell_map(x.clone())
            return spectral_radius(f, z.clone(), n_iter=n_iter).mean().detach()

    def cell_map(self, x: torch.Tensor):
        """(f, z0) with f(z) = cell(z, injection(x)): the fixed-point map of the batch x."""
        injection = self.net.stem(x)
        cell = self.net.deq.cell
        return (lambda z: cell(z, injection)), cell.init_state(injection)

    # -- figures -----------------------------------------------------------------------------
    @torch.no_grad()
    def on_fit_end(self) -> None:
        if self.history["step"]:
            save_figure(self.trainer, iterations_figure(self.history), "deq_solver_iterations")
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        loader = dm.val_dataloader() or dm.train_dataloader()  # [] when there is no validation split
        x = next(iter(loader))[0][:64].to(self.device)
        self.eval()
        f, z0 = self.cell_map(x)
        layer = self.net.deq
        results = {name: layer.solve_forward(f, z0, max_iter=self.hparams.figure_max_iter, solver=name, tol=1e-6)
                   for name in SOLVERS.names()}
        for name, res in results.items():
            self.print(f"deq solver {name}: {res.nfe} evals, median rel residual "
                       f"{res.rel_residual.median():.2e}")
        save_figure(self.trainer, residual_figure(results), "deq_solver_residuals")
