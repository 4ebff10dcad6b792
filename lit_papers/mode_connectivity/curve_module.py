"""`CurveModule`: find a low-loss curve between two trained networks (Garipov et al. 2018, Sec. 3).

One `fit` tells the whole story (settings: the `curve` group, settings.Curve). Without
`curve.endpoints`, the first `curve.endpoint_epochs` epochs train endpoint w_0 from seed
`curve.endpoint_seeds[0]`, the next `curve.endpoint_epochs` train w_1 from `curve.endpoint_seeds[1]`,
and the remaining epochs train the curve's bends; with `curve.endpoints: [a.ckpt, b.ckpt]` (two runs
of `ClassifierModule`, or plain state dicts) every epoch trains the curve. Curve training minimises
E_{t~U(0,1)} [L(phi(t)) + wd/2 ||phi(t)||^2] with one t per minibatch; the endpoints get no gradient.
At the end of fit the curve and the straight segment are evaluated on a t grid with exact BatchNorm
statistics at every t, and the loss surface is evaluated on the plane through (w_0, bend, w_1).
Figures: `mode_connectivity_curve`, `mode_connectivity_plane`; per-t values: `curve_eval.csv` in the run folder.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import cached_property, partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call

from lit_papers.core import ClassifierModule, run_dir, save_figure
from lit_papers.core.optim import Optim
from lit_papers.core.settings import keep_groups
from lit_papers.models import build_model

from .batchnorm import has_batchnorm, recompute_bn
from .curves import CurveNet, l2_penalty, linear_weights
from .evaluation import evaluate_path, path_metrics
from .figures import curve_figure, plane_figure
from .plane import evaluate_plane, flat_points, plane_basis, plane_grid
from .settings import Curve


def load_endpoint(path: str) -> dict[str, torch.Tensor]:
    """Parameters of a `ClassifierModule` checkpoint (keys `net.*`) or of a plain state dict file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ValueError(f"endpoint checkpoint {path!r} does not exist; train it first "
                         "(python -m lit_papers fit --config configs/classifier.yaml) or drop `endpoints` "
                         "to train both endpoints inside this fit") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state


class CurveModule(ClassifierModule):
    """Curve between two networks of architecture `arch` (all ClassifierModule arguments apply;
    `optim.weight_decay` is applied to phi(t) in the loss, `optim.schedule` runs once per phase).

    Args:
        curve: the curve's family and bends and how its two endpoints are obtained (settings.Curve).
        val_t: the point of the curve validated during curve training (BN recomputed first).
        eval_points: size of the t grid of the final evaluation (61 in the paper).
        plane_points: grid side of the loss plane (0 skips it); plane_margin: relative margin.
    """

    test_after_fit = False  # the final evaluation covers the test set along the whole curve
    # No "best" checkpoint: validation accuracy compares endpoint-phase networks with curve points,
    # so a best-by-val/acc copy would not be the trained curve. last.ckpt holds the result.
    checkpoint_monitor = None

    def __init__(self, arch: str = "mlp", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(name="sgd", lr=0.05, weight_decay=5e-4, schedule="swa_linear"),
                 curve: Curve = Curve(), val_t: float = 0.5, eval_points: int = 61,
                 plane_points: int = 21, plane_margin: float = 0.2):
        Curve.of(curve)  # fail fast, naming the field
        if eval_points < 2 or plane_points < 0:
            raise ValueError(f"need eval_points >= 2 and plane_points >= 0, got {eval_points}, {plane_points}")
        super().__init__(arch, arch_kwargs, num_classes, input_shape, optim)
        keep_groups(self, curve=Curve)

    @cached_property
    def curve(self) -> Curve:
        """The `curve` group of the hyper-parameters, built once."""
        return Curve.of(self.hparams.curve)

    # -- construction ------------------------------------------------------------------------
    def _base_net(self, seed: Optional[int] = None):
        hp = self.hparams
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return build_model(hp.arch, tuple(hp.input_shape), hp.num_classes, **(hp.arch_kwargs or {}))

    def build_network(self) -> CurveNet:
        curve = self.curve
        net = CurveNet(self._base_net(), curve=curve.kind, num_bends=curve.num_bends)
        if curve.endpoints is not None:
            for k, path in zip((0, -1), curve.endpoints):
                net.set_point(k, load_endpoint(path))
            net.init_linear()
        else:
            for k, seed in zip((0, -1), curve.endpoint_seeds):
                net.set_point(k, dict(self._base_net(seed).named_parameters()))
        return net

    # -- phases ------------------------------------------------------------------------------
    @property
    def _endpoint_epochs(self) -> int:
        return self.curve.trained_endpoint_epochs

    def phase(self, epoch: Optional[int] = None) -> str:
        """`endpoint0`, `endpoint1` or `curve` for `epoch` (default: the current one)."""
        epoch = self.current_epoch if epoch is None else epoch
        e = self._endpoint_epochs
        return "endpoint0" if epoch < e else "endpoint1" if epoch < 2 * e else "curve"

    def check_trainer(self, trainer) -> None:
        """The epoch budget holds both endpoints and the curve; called before the run folder exists."""
        if trainer.max_epochs - 2 * self._endpoint_epochs < 1:
            raise ValueError(f"trainer.max_epochs={trainer.max_epochs} leaves no epoch for the curve after "
                             f"2 x curve.endpoint_epochs={self._endpoint_epochs}: set --trainer.max_epochs="
                             f"{2 * self._endpoint_epochs + 1} or more, or lower "
                             f"--model.init_args.curve.endpoint_epochs "
                             f"(a short check: --trainer.max_steps=N stops the run early)")

    def on_fit_start(self) -> None:
        self.check_trainer(self.trainer)

    def on_train_epoch_start(self) -> None:
        phase = self.phase()
        last = self.net.num_points - 1
        trainable = {"endpoint0": {0}, "endpoint1": {last}, "curve": set(range(1, last))}[phase]
        for k in range(self.net.num_points):
            for p in self.net.points[k].values():
                p.requires_grad_(k in trainable)
        if phase == "curve" and self.current_epoch == 2 * self._endpoint_epochs:
            self.net.init_linear()  # bends start on the segment between the trained endpoints

    def _weights(self) -> tuple[dict[str, torch.Tensor], Optional[float]]:
        phase = self.phase()
        if phase != "curve":
            return self.net.point(0 if phase == "endpoint0" else -1), None
        # One t ~ U(0, 1) per minibatch: an unbiased estimate of E_t L(phi(t)).
        t = torch.rand(()).item() if self.training else self.hparams.val_t
        return self.net.weights(t), t

    # -- steps -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        return self.net(x, t)

    def model_step(self, batch):
        x, y = batch
        weights, _ = self._weights()
        logits = functional_call(self.net.net, weights, (x,))
        loss = F.cross_entropy(logits, y)
        if self.training and self.weight_decay > 0:
            loss = loss + 0.5 * self.weight_decay * l2_penalty(weights)
        return loss, logits, y

    def on_validation_epoch_start(self) -> None:
        if self.phase() == "curve" and has_batchnorm(self.net.net) and not self.trainer.sanity_checking:
            t = self.hparams.val_t
            recompute_bn(self.net.net, lambda x: self.net(x, t), self._train_batches())

    @property
    def weight_decay(self) -> float:
        """optim.weight_decay, which the curve's loss carries as 0.5 * wd * ||phi(t)||^2."""
        return self.optim.weight_decay

    def configure_optimizers(self):
        optim = self.optim
        # Weight decay lives in the loss (on phi(t)), so the optimizer has none.
        opt = optim.build(list(self.net.points.parameters()), weight_decay=0.0)
        per_epoch = max(int(self.trainer.estimated_stepping_batches) // max(self.trainer.max_epochs, 1), 1)
        factor = optim.factor()
        e = self._endpoint_epochs
        curve_steps = max((self.trainer.max_epochs - 2 * e) * per_epoch, 1)
        endpoint_scale = (self.curve.endpoint_lr or optim.lr) / optim.lr

        def lr_factor(step: int) -> float:
            # The schedule restarts in each phase: endpoint 0, endpoint 1, curve.
            if step < 2 * e * per_epoch:
                return endpoint_scale * factor(step % (e * per_epoch), e * per_epoch)
            return factor(step - 2 * e * per_epoch, curve_steps)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- final evaluation --------------------------------------------------------------------
    def _train_batches(self) -> list:
        dm = self.trainer.datamodule
        if hasattr(dm, "train_x"):  # fixed order, large batches: evaluation only
            size = getattr(dm.hparams, "eval_batch_size", 1000)
            return [(dm.train_x[i:i + size], dm.train_y[i:i + size]) for i in range(0, len(dm.train_x), size)]
        return list(dm.train_dataloader())

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == self.trainer.max_epochs - 1:
            self.evaluate_curve()

    @torch.no_grad()
    def evaluate_curve(self) -> dict[str, float]:
        """Evaluate curve and segment on the t grid, the loss plane, save figures and per-t values."""
        hp, net = self.hparams, self.net
        train, test = self._train_batches(), list(self.trainer.datamodule.test_dataloader())
        ts = torch.linspace(0, 1, hp.eval_points).tolist()
        start, end = net.point(0), net.point(-1)
        paths = {"curve": evaluate_path(net.net, net.weights, ts, train, test, self.weight_decay),
                 "segment": evaluate_path(net.net, partial(linear_weights, start, end), ts, train, test,
                                          self.weight_decay)}
        metrics = {**path_metrics(paths["curve"], "curve"), **path_metrics(paths["segment"], "segment")}
        for key, value in metrics.items():
            self.log(key, value)
        self._write_csv(paths)
        save_figure(self.trainer, curve_figure(paths, self.curve.kind), "mode_connectivity_curve")
        if hp.plane_points > 0 and net.num_points > 2:
            self._plane(train, test)
        return metrics

    def _plane(self, train, test) -> None:
        hp, net = self.hparams, self.net
        bend = net.point(1) if net.num_points == 3 else net.weights(0.5)
        w0, w1, w2 = flat_points([net.point(0), bend, net.point(-1)])
        basis = plane_basis(w0, w1, w2)
        curve_pts = flat_points([net.weights(t) for t in torch.linspace(0, 1, 41).tolist()])
        xs, ys = plane_grid(basis, [w0, w1, w2, *curve_pts], hp.plane_points, hp.plane_margin)
        like = {n: w.detach() for n, w in net.point(0).items()}
        grid = evaluate_plane(net.net, like, basis, xs, ys, train, test, self.weight_decay)
        fig = plane_figure(grid, [basis.project(w) for w in curve_pts],
                           [basis.project(w) for w in (w0, w1, w2)], self.curve.kind)
        save_figure(self.trainer, fig, "mode_connectivity_plane")
        self.log("plane/train_loss_min", float(grid["train_loss"].min()))

    def _write_csv(self, paths) -> None:
        folder = run_dir(self.trainer)
        if folder is None or not self.trainer.is_global_zero:
            return
        keys = [k for k in paths["curve"] if k != "t"]
        with (folder / "curve_eval.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t", *[f"{p}/{k}" for p in paths for k in keys]])
            for i, t in enumerate(paths["curve"]["t"]):
                writer.writerow([f"{t:.6g}", *[f"{paths[p][k][i]:.6g}" for p in paths for k in keys]])
