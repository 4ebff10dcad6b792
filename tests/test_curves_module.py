"""CurveModule end to end on tiny data: phases, frozen endpoints, moved bends, exact endpoints."""

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback

from lit_papers.data import VisionDataModule
from lit_papers.mode_connectivity import CurveModule
from lit_papers.mode_connectivity.batchnorm import recompute_bn
from lit_papers.mode_connectivity.settings import Curve
from lit_papers.models import build_model

ARCH = {"hidden": [24], "batch_norm": True}


class _Snapshots(Callback):
    def __init__(self):
        self.points = {}

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.points[-1] = self._copy(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self.points[trainer.current_epoch] = self._copy(pl_module)

    @staticmethod
    def _copy(module):
        net = module.net
        return [{n: w.detach().clone() for n, w in net.point(k).items()} for k in range(net.num_points)]


def _fit(model, epochs):
    dm = VisionDataModule(dataset="digits", batch_size=32, val_size=100, eval_batch_size=500)
    snaps = _Snapshots()
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=4, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[snaps], accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    return trainer, snaps, dm


def _same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


def test_phases_train_each_endpoint_then_only_the_bends():
    model = CurveModule(arch="mlp", arch_kwargs=ARCH, curve=Curve(endpoint_epochs=1), eval_points=3, plane_points=0)
    trainer, snaps, _ = _fit(model, epochs=3)
    p = snaps.points
    assert not _same(p[0][0], p[-1][0]) and _same(p[0][2], p[-1][2])  # epoch 0: endpoint 0 only
    assert _same(p[1][0], p[0][0]) and not _same(p[1][2], p[0][2])  # epoch 1: endpoint 1 only
    assert _same(p[2][0], p[1][0]) and _same(p[2][2], p[1][2])  # curve epoch: endpoints frozen
    line = {n: 0.5 * (p[1][0][n] + p[1][2][n]) for n in p[1][0]}
    assert not _same(p[2][1], line)  # the bend left the segment
    m = trainer.callback_metrics
    assert m["curve/train_loss_start"] == pytest.approx(m["segment/train_loss_start"].item())
    assert m["curve/train_loss_end"] == pytest.approx(m["segment/train_loss_end"].item())


def test_checkpoint_endpoints_stay_exact_and_reproduce_endpoint_logits(tmp_path):
    paths, nets = [], []
    for seed in (5, 6):
        torch.manual_seed(seed)
        net = build_model("mlp", (1, 8, 8), 10, **ARCH)
        path = tmp_path / f"{seed}.ckpt"
        torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
        paths.append(str(path))
        nets.append(net)
    model = CurveModule(arch="mlp", arch_kwargs=ARCH, curve=Curve(endpoints=paths), eval_points=3, plane_points=2)
    _, snaps, dm = _fit(model, epochs=1)
    for k, net in zip((0, 2), nets):
        assert _same(snaps.points[0][k], dict(net.named_parameters()))
    assert not _same(snaps.points[0][1], snaps.points[-1][1])  # bends moved
    batches = [(dm.train_x[i:i + 256], dm.train_y[i:i + 256]) for i in range(0, len(dm.train_x), 256)]
    for t, net in ((0.0, nets[0]), (1.0, nets[1])):
        recompute_bn(net, net, batches)
        recompute_bn(model.net.net, lambda x, t=t: model.net(x, t), batches)
        net.eval()
        model.eval()
        torch.testing.assert_close(model(dm.test_x, t), net(dm.test_x), atol=1e-5, rtol=0)


def test_bad_configuration_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="bezier"):
        CurveModule(curve=Curve(kind="spline"))
    with pytest.raises(ValueError, match="curve.endpoints must list exactly two"):
        CurveModule(curve={"endpoints": ["a.ckpt"]})
    with pytest.raises(ValueError, match="does not exist"):
        CurveModule(arch="mlp", num_classes=10, input_shape=(1, 8, 8),
                    curve=Curve(endpoints=[str(tmp_path / "a.ckpt"), str(tmp_path / "b.ckpt")]))


def test_trained_curve_removes_the_segment_barrier():
    """The paper's phenomenon at toy scale: between two independently trained MLPs the straight
    segment has a train-loss barrier; the trained one-bend Bezier curve between the same endpoints
    has a far lower one (measured: segment 0.149, curve 0.018)."""
    L.seed_everything(0, verbose=False)
    dm = VisionDataModule(dataset="digits", batch_size=32, val_size=100, eval_batch_size=500)
    model = CurveModule(arch="mlp", arch_kwargs={"hidden": [64], "batch_norm": True},
                        curve=Curve(endpoint_epochs=4),
                        eval_points=9, plane_points=0)
    trainer = L.Trainer(max_epochs=16, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["segment/train_loss_barrier"] > 0.05  # the straight line crosses a ridge
    assert m["curve/train_loss_barrier"] < 0.3 * m["segment/train_loss_barrier"]
    assert m["curve/train_nll_max"] < 0.5 * m["segment/train_nll_max"]
    assert m["curve/train_err_max"] < m["segment/train_err_max"]
