"""DEQ over a causal Transformer block: the equilibrium stays causal, and the language model learns."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_papers.core import Optim
from lit_papers.deq import CharCorpusDataModule, DEQLayer, DEQSequenceModule
from lit_papers.deq.cells import TransformerCell
from lit_papers.deq.settings import Backward, Solver


def test_equilibrium_of_a_causal_cell_is_causal():
    # Naive iterates from z0 = 0 are causal, so changing the last tokens cannot move earlier
    # positions at all. Anderson mixes whole sequences (its weights see future positions), so
    # only its converged fixed point is causal, up to the solver tolerance.
    torch.manual_seed(0)
    cell = TransformerCell(16, heads=2).double()
    x = torch.randn(3, 12, 16, dtype=torch.float64)
    x_changed = x.clone()
    x_changed[:, 8:] = torch.randn(3, 4, 16, dtype=torch.float64)
    for layer, atol in ((DEQLayer(cell, solver="naive", max_iter=15, tol=0.0), 1e-12),
                        (DEQLayer(cell, solver="anderson", max_iter=300, tol=1e-11), 1e-8)):
        with torch.no_grad():
            z, info = layer(x)
            z_changed, _ = layer(x_changed)
        torch.testing.assert_close(z[:, :8], z_changed[:, :8], atol=atol, rtol=0)
        assert (z[:, 8:] - z_changed[:, 8:]).abs().max() > 1e-3


def test_per_sequence_solver_statistics_have_batch_shape():
    torch.manual_seed(0)
    layer = DEQLayer(TransformerCell(16, heads=2), max_iter=10)
    z, info = layer(torch.randn(5, 7, 16, requires_grad=True))
    z.sum().backward()
    assert z.shape == (5, 7, 16)
    assert info.forward.nstep.shape == (5,) and info.backward.nstep.shape == (5,)


@pytest.mark.slow
def test_char_language_model_learns(tmp_path):
    torch.manual_seed(0)
    dm = CharCorpusDataModule(seq_len=32, batch_size=32)
    dm.setup("fit")
    module = DEQSequenceModule(width=32, heads=2, solver=Solver(max_iter=8), backward=Backward(max_iter=8),
                               optim=Optim(name="adamw", lr=3e-3),
                               vocab_size=dm.vocab_size, max_len=32)
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        before = module.step(batch)[0].item()
    trainer = L.Trainer(max_steps=40, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    with torch.no_grad():
        after = module.step(batch)[0].item()
    assert before > 0.9 * torch.log(torch.tensor(float(dm.vocab_size))).item()  # ~uniform at init
    assert after < before - 1.0
    assert "deq/bwd_iters" in trainer.callback_metrics
