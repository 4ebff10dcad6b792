"""DEQModule under Lightning: trains, logs the solver metrics, pretrains, reloads from a checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_papers.core import Optim
from lit_papers.data import VisionDataModule
from lit_papers.deq import DEQModule
from lit_papers.deq.settings import Backward, JacobianPenalty, Solver

TINY = dict(downsample=1, solver=Solver(max_iter=12), backward=Backward(max_iter=12), optim=Optim(lr=5e-3))
CELLS = {"conv": dict(cell="conv", width=16, groups=4, pool=4), "mlp": dict(cell="mlp", width=32, groups=1)}


def fit(module, tmp_path, steps):
    dm = VisionDataModule(dataset="digits", batch_size=64, val_size=200, seed=0)
    trainer = L.Trainer(max_steps=steps, limit_val_batches=1, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    return trainer, dm


def batch_loss(module, batch):
    module.eval()
    with torch.no_grad():
        return module.model_step(batch)[0].item()


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["conv", "mlp"])
def test_training_lowers_the_loss_and_logs_solver_metrics(cell, tmp_path):
    torch.manual_seed(0)
    dm = VisionDataModule(dataset="digits", batch_size=64, val_size=200, seed=0)
    dm.setup("fit")
    module = DEQModule(jacobian=JacobianPenalty(weight=0.1), pretrain_steps=3, num_classes=dm.num_classes,
                       input_shape=dm.input_shape, **CELLS[cell], **TINY)
    batch = (dm.val_x[:200], dm.val_y[:200])
    before = batch_loss(module, batch)
    module.train()
    trainer, _ = fit(module, tmp_path, steps=25)
    after = batch_loss(module, batch)
    assert after < 0.6 * before
    logged = trainer.callback_metrics
    for key in ("deq/fwd_iters", "deq/fwd_residual", "deq/bwd_iters", "deq/bwd_residual",
                "deq/unconverged_frac", "deq/jac_loss", "deq/val_fwd_iters", "deq/spectral_radius"):
        assert key in logged, key
        assert torch.isfinite(logged[key])
    assert 0 < logged["deq/fwd_iters"] <= TINY["solver"].max_iter
    # The first 3 steps trained the unrolled stack (no solver, no backward solve), then the DEQ.
    hist = module.history
    assert all(v != v for v in hist["fwd_iters"][:3]) and all(v == v for v in hist["fwd_iters"][3:])


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    module = DEQModule(**CELLS["conv"], **TINY)
    trainer, dm = fit(module, tmp_path, steps=2)
    path = tmp_path / "deq.ckpt"
    trainer.save_checkpoint(path)
    reloaded = DEQModule.load_from_checkpoint(path)
    x = dm.val_x[:16]
    module.eval(), reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), module(x))
    assert reloaded.hparams.solver["name"] == "anderson" and reloaded.hparams.width == 16
    assert Solver.of(reloaded.hparams.solver) == Solver(max_iter=12)


def test_bad_names_fail_fast_with_the_valid_options():
    with pytest.raises(ValueError, match="anderson, broyden, naive"):
        DEQModule(solver=Solver(name="newton"))
    with pytest.raises(ValueError, match="ift, phantom, unroll"):
        DEQModule(backward={"mode": "adjoint"})
    with pytest.raises(ValueError, match="conv, mlp"):
        DEQModule(cell="lstm", num_classes=10, input_shape=(1, 8, 8))


@pytest.mark.parametrize("cell", ["conv", "mlp"])
def test_validate_and_test_run_under_inference_mode(cell, tmp_path):
    # Trainer.validate/test evaluate under torch.inference_mode (fit's validation under no_grad);
    # the spectral radius of J_f(z*) needs autograd, so the module leaves inference mode for it.
    torch.manual_seed(0)
    dm = VisionDataModule(dataset="digits", batch_size=64, val_size=200, seed=0)
    module = DEQModule(**CELLS[cell], **TINY)
    trainer = L.Trainer(limit_val_batches=2, limit_test_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=tmp_path, inference_mode=True)
    (val,) = trainer.validate(module, datamodule=dm)
    assert 0.0 < val["deq/spectral_radius"] < 10.0 and 0.0 <= val["val/acc"] <= 1.0
    assert val["deq/val_fwd_iters"] > 0
    (test,) = trainer.test(module, datamodule=dm)
    assert 0.0 <= test["test/acc"] <= 1.0
    # Under no_grad (the fit loop's validation) the same value comes out: one estimate, two contexts.
    module.eval()
    with torch.inference_mode():
        z = module.net(dm.val_x[:16], return_info=True)[1].forward.z
        torch.manual_seed(1)
        rho_inference = module.fixed_point_spectral_radius(dm.val_x[:16], z)
    with torch.no_grad():
        torch.manual_seed(1)
        rho_no_grad = module.fixed_point_spectral_radius(dm.val_x[:16], z.clone())
    torch.testing.assert_close(rho_inference, rho_no_grad)
