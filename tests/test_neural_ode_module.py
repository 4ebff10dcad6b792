"""NeuralODEModule under Lightning: NFE logging per step, the tolerance sweep, checkpoint reload."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.neural_ode import NeuralODEModule, ODESolve
from lit_papers.neural_ode.odeblock import ODESolverError, translate_solver_error


class TinyImages(L.LightningDataModule):
    """64 random 1x8x8 images in 4 classes: enough to run Lightning's loop."""

    num_classes, input_shape = 4, (1, 8, 8)

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)

    val_dataloader = test_dataloader = train_dataloader


def _fit(tmp_path, **kwargs):
    module = NeuralODEModule(channels=4, nfe_tolerances=(1e-1, 1e-4), **kwargs)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, datamodule=TinyImages())
    return module, trainer


@pytest.mark.parametrize("variant, nfe_b", [("odenet", 8), ("rknet", 0)])
def test_nfe_forward_and_backward_logged_per_step(tmp_path, variant, nfe_b):
    module, trainer = _fit(tmp_path, variant=variant, ode=ODESolve(method="rk4", step_size=0.5))
    metrics = trainer.logged_metrics
    assert metrics["node/nfe_forward"].item() == 8  # 2 RK4 steps x 4 stages
    assert metrics["node/nfe_backward"].item() == nfe_b  # adjoint re-solves; backprop never calls f
    assert metrics["node/step_time_ms"].item() > 0
    assert module.nfe_history["nfe_forward"] == [8, 8]
    assert module.nfe_history["nfe_backward"] == [nfe_b, nfe_b]


def test_resnet_and_mlp_log_no_nfe(tmp_path):
    for variant in ("resnet", "mlp"):
        _, trainer = _fit(tmp_path, variant=variant)
        assert "node/nfe_forward" not in trainer.logged_metrics
        assert "node/step_time_ms" in trainer.logged_metrics


def test_tolerance_sweep_nfe_falls_as_tolerance_loosens(tmp_path):
    module, trainer = _fit(tmp_path, variant="odenet", ode=ODESolve(method="dopri5"))
    module.hparams.nfe_tolerances = (1e-1, 1e-3, 1e-6)
    rows = module.tolerance_sweep(trainer.datamodule.val_dataloader())
    nfe = [r["nfe"] for r in rows]
    assert nfe[0] <= nfe[1] <= nfe[2] and nfe[0] < nfe[2]
    assert module.ode_block.method == "dopri5" and module.ode_block.eval_rtol == 1e-3  # restored


def test_checkpoint_reload_gives_same_outputs(tmp_path):
    module, trainer = _fit(tmp_path, variant="odenet", ode=ODESolve(method="rk4", step_size=0.5))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    reloaded = NeuralODEModule.load_from_checkpoint(path)
    x = torch.randn(3, 1, 8, 8)
    module.eval(), reloaded.eval()
    torch.testing.assert_close(module(x), reloaded(x))


def test_bad_names_and_untranslated_assertions():
    with pytest.raises(ValueError, match="valid variants"):
        NeuralODEModule(variant="node")
    with pytest.raises(ValueError, match="ode.method.*valid methods"):
        NeuralODEModule(ode={"method": "rk45"})
    other = AssertionError("t must be strictly increasing or decreasing")
    assert translate_solver_error(other) is other
    assert isinstance(translate_solver_error(AssertionError("underflow in dt 1e-20")), ODESolverError)
