"""Character-level language modelling with a DEQ over a weight-tied causal Transformer block.

The corpus is the dataset documentation that ships inside scikit-learn (`sklearn/datasets/descr`,
~43k characters of English), so the run needs no download.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.core import save_figure
from lit_papers.core.optim import Optim, configure_from_hparams
from lit_papers.core.settings import keep_groups
from lit_papers.data.epoch_shuffle import EpochShuffle, ResumableLoader, fit_progress

from .cells import build_cell
from .figures import iterations_figure
from .layer import DEQLayer
from .metrics import SolverLogging
from .settings import Backward, JacobianPenalty, Solver, layer_kwargs


def load_char_corpus() -> str:
    """The scikit-learn dataset descriptions, concatenated in file-name order."""
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "descr"
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.rst")))


class CharCorpusDataModule(L.LightningDataModule):
    """Windows of `seq_len + 1` characters; the last `val_frac` of the text is validation and test."""

    def __init__(self, seq_len: int = 64, batch_size: int = 32, val_frac: float = 0.1, seed: int = 0):
        super().__init__()
        if not 0.0 < val_frac < 0.5:
            raise ValueError(f"data.val_frac must lie in (0, 0.5), got {val_frac}")
        self.save_hyperparameters()
        text = load_char_corpus()
        self.vocab = sorted(set(text))
        self.vocab_size = len(self.vocab)
        index = {ch: i for i, ch in enumerate(self.vocab)}
        self.tokens = torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def windows(self, tokens: torch.Tensor, stride: int) -> TensorDataset:
        length = self.hparams.seq_len + 1
        starts = torch.arange(0, len(tokens) - length, stride)
        chunks = torch.stack([tokens[s:s + length] for s in starts.tolist()])  # (N, T + 1)
        return TensorDataset(chunks[:, :-1], chunks[:, 1:])

    def setup(self, stage: Optional[str] = None) -> None:
        split = int(len(self.tokens) * (1 - self.hparams.val_frac))
        half = self.hparams.seq_len // 2
        self.train_set = self.windows(self.tokens[:split], stride=half)  # overlapping windows
        self.val_set = self.windows(self.tokens[split:], stride=self.hparams.seq_len)

    def train_dataloader(self):
        # Order is a function of (seed, epoch) and the loader saves its position, so resume is exact.
        loader = ResumableLoader(self.train_set, batch_size=self.hparams.batch_size,
                                 sampler=EpochShuffle(self.train_set, self.hparams.seed))
        if self.trainer is not None:
            loader.progress = fit_progress(self.trainer)
        return loader

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)

    def test_dataloader(self):
        return self.val_dataloader()


class DEQSequenceModule(SolverLogging, L.LightningModule):
    """Embedding (+ learned positions) -> z* = TransformerCell(z*, embedding) -> linear head.

    Args:
        width, heads, hidden, weight_norm: the Transformer cell.
        solver, backward, jacobian: the forward root finder, the gradient through the equilibrium and
            the Jacobian penalty (`Solver`, `Backward`, `JacobianPenalty`, as in `DEQModule`; here at
            most 20 iterations forward and backward).
        pretrain_steps, pretrain_depth: the first steps train a weight-tied stack of that depth.
        optim: the optimizer and its schedule (`Optim`).
        vocab_size, max_len: read from the datamodule when not given.

    Logs `train/loss`, `val/loss`, `val/bpc` (bits per character) and the `deq/*` solver metrics.
    """

    checkpoint_monitor = ("val/loss", "min")

    def __init__(self, width: int = 64, heads: int = 4, hidden: Optional[int] = None, weight_norm: bool = True,
                 solver: Solver = Solver(max_iter=20), backward: Backward = Backward(max_iter=20),
                 jacobian: JacobianPenalty = JacobianPenalty(), pretrain_steps: int = 0, pretrain_depth: int = 2,
                 optim: Optim = Optim(name="adamw", lr=2e-3),
                 vocab_size: Optional[int] = None, max_len: Optional[int] = None):
        super().__init__()
        self.save_hyperparameters()
        keep_groups(self, optim=Optim, solver=Solver, backward=Backward, jacobian=JacobianPenalty)
        self.init_solver_history()
        self.net: Optional[nn.ModuleDict] = None
        if vocab_size is not None and max_len is not None:
            self.net = self.build_network()

    def build_network(self) -> nn.ModuleDict:
        hp = self.hparams
        cell = build_cell("transformer", hp.width, heads=hp.heads, hidden=hp.hidden, weight_norm=hp.weight_norm)
        deq = DEQLayer(cell, **layer_kwargs(hp.solver, hp.backward, hp.jacobian, pretrain_depth=hp.pretrain_depth))
        return nn.ModuleDict({"embed": nn.Embedding(hp.vocab_size, hp.width),
                              "pos": nn.Embedding(hp.max_len, hp.width), "deq": deq,
                              "head": nn.Sequential(nn.LayerNorm(hp.width), nn.Linear(hp.width, hp.vocab_size))})

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        dm = self.trainer.datamodule
        self.hparams.vocab_size, self.hparams.max_len = int(dm.vocab_size), int(dm.hparams.seq_len)
        self.net = self.build_network()

    def forward(self, tokens: torch.Tensor, compute_jac: bool = False):
        """tokens (B, T) -> (logits (B, T, V), DEQInfo)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        injection = self.net["embed"](tokens) + self.net["pos"](positions)  # (B, T, width)
        z, info = self.net["deq"](injection, compute_jac=compute_jac)
        return self.net["head"](z), info

    def step(self, batch, compute_jac: bool = False):
        tokens, targets = batch
        logits, info = self(tokens, compute_jac)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), info

    @cached_property
    def jacobian(self) -> JacobianPenalty:
        """The `jacobian` group (hparams hold it as a dict), built once: every training step reads it."""
        return JacobianPenalty.of(self.hparams.jacobian)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.net["deq"].pretraining = self.global_step < self.hparams.pretrain_steps

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        jac = self.jacobian
        compute_jac = jac.weight > 0 and not self.net["deq"].pretraining and (
            jac.freq >= 1.0 or torch.rand(()).item() < jac.freq)
        loss, info = self.step(batch, compute_jac)
        self.log("train/loss", loss, prog_bar=True)
        self.log_forward(info, prefix="deq/")
        if info.jac_loss is not None:
            self.log("deq/jac_loss", info.jac_loss.detach())
            loss = loss + jac.weight * info.jac_loss
        self.remember(info)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, info = self.step(batch)
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/bpc", loss / math.log(2))
        self.log_forward(info, prefix="deq/val_")

    def test_step(self, batch, batch_idx: int) -> None:
        loss, _ = self.step(batch)
        self.log("test/loss", loss)
        self.log("test/bpc", loss / math.log(2))

    def configure_optimizers(self):
        return configure_from_hparams(self)

    def on_fit_end(self) -> None:
        if self.history["step"]:
            save_figure(self.trainer, iterations_figure(self.history), "deq_solver_iterations")
