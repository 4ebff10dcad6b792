"""The suite's workloads: each runs the project's module through `Trainer.fit` and the matching
plain loop of `plain.py` on the same tensors, and returns rows of (project, plain, figure, target).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from benchmarks import plain
from lit_papers.core import ClassifierModule, Optim
from lit_papers.core.chunked_classifier import ChunkedClassifierModule
from lit_papers.core.population import PopulationModule
from lit_papers.core.step_chunks import StepChunks
from lit_papers.data.device_loader import DeviceBatches
from lit_papers.registry import Registry

WORKLOADS = Registry("workload")
ORDER = ("classifier", "chunked", "population", "odenet", "deq", "compile", "torchdeq")  # default run order
SHAPES = dict(arch="lenet300_100", num_classes=10, input_shape=(1, 28, 28), optim=Optim(name="adam", lr=1.2e-3))


@dataclass
class Setup:
    x: torch.Tensor
    y: torch.Tensor
    batch: int
    epochs: int
    members: int
    steps_per_call: int
    workdir: Path
    repeat: int = 1

    @property
    def cuda(self) -> bool:
        return self.x.device.type == "cuda"

    @property
    def steps(self) -> int:
        return -(-len(self.x) // self.batch)


class _EpochTimer(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        plain.sync(pl_module.device)
        self.t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        plain.sync(pl_module.device)
        self.times.append(time.perf_counter() - self.t)


def lightning_epoch_s(setup: Setup, module: L.LightningModule, grouped: int = 1) -> float:
    """Fastest epoch of `Trainer.fit` (CSV logging every 50 steps, no progress bar, no validation)."""
    batches = DeviceBatches(setup.x, setup.y, setup.batch, shuffle=True)
    loader = StepChunks(batches, grouped) if grouped > 1 else batches
    timer = _EpochTimer()
    trainer = L.Trainer(max_epochs=setup.epochs, accelerator="auto", devices=1, logger=CSVLogger(setup.workdir),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=50, callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    return min(timer.times[1:]) if len(timer.times) > 1 else timer.times[0]


def alternate(setup: Setup, **measure) -> dict:
    """Runs the named measurements in turn, `setup.repeat` rounds, and keeps each one's fastest
    result and peak memory: on a shared, noisy machine both sides see the same background load."""
    best: dict = {}
    for _ in range(setup.repeat):
        for name, fn in measure.items():
            seconds, mib = _peak(fn)
            old = best.get(name)
            best[name] = (seconds, mib) if old is None or seconds < old[0] else old
    return best


def _peak(fn):
    """(result, peak CUDA MiB or None) of fn()."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out = fn()
    return out, (round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None)


def _row(what, project_s, plain_s, target=None, kind="ratio", per="", unit="s"):
    """kind=ratio: project/plain (<= target); kind=speedup: plain/project (>= target)."""
    figure = project_s / plain_s if kind == "ratio" else plain_s / project_s
    met = None if target is None else (figure <= target if kind == "ratio" else figure >= target)
    sign = "<=" if kind == "ratio" else ">="
    return {"what": what, "project": f"{project_s:.4g} {unit}{per}", "plain": f"{plain_s:.4g} {unit}{per}",
            "figure": f"{figure:.2f}x" if kind == "ratio" else f"speed-up {figure:.2f}x", "value": figure,
            "target": "" if target is None else f"{sign} {target}x", "met": met,
            "project_s": project_s, "plain_s": plain_s}


@WORKLOADS.register("classifier")
def classifier(setup: Setup) -> dict:
    """ClassifierModule (one step per training_step, per-step logging) vs the plain eager loop."""
    r = alternate(setup, plain=lambda: plain.eager_epoch_s(setup.x, setup.y, setup.batch, setup.epochs),
                  project=lambda: lightning_epoch_s(setup, ClassifierModule(**SHAPES)))
    (plain_s, plain_mib), (project_s, project_mib) = r["plain"], r["project"]
    return {"rows": [_row("epoch, eager, one step per call", project_s, plain_s, target=1.15, per="/epoch")],
            "steps_per_epoch": setup.steps, "peak_mib": {"project": project_mib, "plain": plain_mib}}


@WORKLOADS.register("chunked")
def chunked(setup: Setup) -> dict:
    """S steps per training_step; on a GPU each step is one replayed CUDA graph."""
    mode = "cuda_graph" if setup.cuda else "none"
    reference = plain.graph_epoch_s if setup.cuda else plain.eager_epoch_s
    modules = []

    def project():
        modules.append(ChunkedClassifierModule(step_capture=mode, steps_per_call=setup.steps_per_call, **SHAPES))
        return lightning_epoch_s(setup, modules[-1], setup.steps_per_call)

    r = alternate(setup, eager=lambda: plain.eager_epoch_s(setup.x, setup.y, setup.batch, setup.epochs),
                  plain=lambda: reference(setup.x, setup.y, setup.batch, setup.epochs), project=project)
    (plain_s, plain_mib), (project_s, project_mib), eager_s = r["plain"], r["project"], r["eager"][0]
    module = modules[-1]
    rows = [_row(f"epoch, {mode}, {setup.steps_per_call} steps per call vs plain {mode} loop",
                 project_s, plain_s, target=1.15, per="/epoch"),
            _row(f"epoch, {mode} vs plain eager loop", project_s, eager_s, kind="speedup",
                 target=5.0 if setup.cuda else None, per="/epoch")]
    return {"rows": rows, "capture_mode": module.capture_mode,
            "peak_mib": {"project": project_mib, "plain": plain_mib}}


@WORKLOADS.register("population")
def population(setup: Setup) -> dict:
    """K LeNets in one process (stacked parameters, vmap), S steps per call, captured on a GPU."""
    k, mode = setup.members, ("cuda_graph" if setup.cuda else "none")
    modules = []

    def project():
        modules.append(PopulationModule(population=k, step_capture=mode, steps_per_call=setup.steps_per_call,
                                        **SHAPES))
        return lightning_epoch_s(setup, modules[-1], setup.steps_per_call)

    r = alternate(setup, eager=lambda: plain.eager_epoch_s(setup.x, setup.y, setup.batch, setup.epochs),
                  plain=lambda: plain.population_epoch_s(setup.x, setup.y, setup.batch, setup.epochs, k,
                                                         capture=setup.cuda),
                  project=project)
    (plain_s, plain_mib), (project_s, project_mib), eager_s = r["plain"], r["project"], r["eager"][0]
    module = modules[-1]
    rows = [_row(f"epoch of {k} members, {mode}, vs plain vmap loop", project_s, plain_s, target=1.15,
                 per="/epoch"),
            _row("per member vs plain eager single-model loop", project_s / k, eager_s, kind="speedup",
                 target=20.0 if setup.cuda and k >= 16 else None, per="/epoch")]
    out = {"rows": rows, "members": k, "capture_mode": module.capture_mode,
           "peak_mib": {"project": project_mib, "plain": plain_mib}}
    return out


@WORKLOADS.register("compile")
def compiled(setup: Setup) -> dict:
    """step_capture=compile (torch.compile reduce-overhead loss), GPU only."""
    if not setup.cuda:
        return {"rows": [], "note": "skipped on CPU (step_capture=compile falls back to eager there by design)"}
    eager_s = plain.eager_epoch_s(setup.x, setup.y, setup.batch, setup.epochs)
    module = ChunkedClassifierModule(step_capture="compile", steps_per_call=setup.steps_per_call, **SHAPES)
    project_s = lightning_epoch_s(setup, module, setup.steps_per_call)
    return {"rows": [_row("epoch, torch.compile reduce-overhead vs plain eager loop", project_s, eager_s,
                          kind="speedup", per="/epoch")]}


def _plain_loop_epoch_s(net, x, y, batch: int, epochs: int, lr: float) -> float:
    """A plain Adam loop over device-resident batches for an arbitrary network."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def epoch():
        perm = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return plain._fastest_epoch(epoch, epochs, x.device)


@WORKLOADS.register("odenet")
def odenet(setup: Setup) -> dict:
    """NeuralODEModule (ODE-Net, adjoint, fixed-step RK4: 16 NFE forward) vs its own network in a
    plain torchdiffeq training loop: the same solver work, so the ratio is the module's overhead."""
    from lit_papers.neural_ode import NeuralODEModule
    from lit_papers.neural_ode.classifiers import build_classifier
    from lit_papers.neural_ode.settings import ODESolve

    batch = 128 if setup.cuda else 32
    n = batch * (40 if setup.cuda else 10)
    x, y = setup.x[:n], setup.y[:n]
    solver = dict(channels=64 if setup.cuda else 16, T=1.0, method="rk4", step_size=0.25, rtol=1e-3, atol=1e-3)
    shapes = dict(num_classes=10, input_shape=(1, 28, 28))

    def project():
        torch.manual_seed(0)
        ode = ODESolve(method="rk4", step_size=0.25, rtol=1e-3, atol=1e-3)
        module = NeuralODEModule(variant="odenet", nfe_tolerances=[], optim=Optim(lr=1e-3), ode=ode,
                                 channels=solver["channels"], T=solver["T"], **shapes)
        sub = Setup(x=x, y=y, batch=batch, epochs=setup.epochs, members=1, steps_per_call=1,
                    workdir=setup.workdir)
        return lightning_epoch_s(sub, module)

    def plain_side():
        torch.manual_seed(0)
        net = build_classifier("odenet", (1, 28, 28), 10, **solver).to(x.device)
        return _plain_loop_epoch_s(net, x, y, batch, setup.epochs, lr=1e-3)

    r = alternate(setup, plain=plain_side, project=project)
    (plain_s, plain_mib), (project_s, project_mib) = r["plain"], r["project"]
    steps = -(-n // batch)
    return {"rows": [_row(f"ODE-Net step, batch {batch}, rk4 16 NFE, adjoint", project_s / steps, plain_s / steps,
                          target=1.1, per="/step")],
            "peak_mib": {"project": project_mib, "plain": plain_mib}}


@WORKLOADS.register("deq")
def deq(setup: Setup) -> dict:
    """DEQModule (conv cell, Anderson forward, implicit backward by Anderson) vs its own network in a
    plain training loop from the same initialisation: the same solves, so the ratio is the module's
    overhead. (The torchdeq package's DEQ on the same cell is the `torchdeq` workload.)"""
    from lit_papers.deq import DEQModule
    from lit_papers.deq.settings import Backward, Solver

    batch = 128 if setup.cuda else 32
    n = batch * 40  # 40 steps per epoch: Lightning's per-epoch cost (hooks, epoch logging) is not per-step cost
    x, y = setup.x[:n], setup.y[:n]
    kw = dict(cell="conv", width=48 if setup.cuda else 16, downsample=2, pool=7,
              solver=Solver(name="anderson", max_iter=20, tol=1e-3),
              backward=Backward(mode="ift", solver="anderson", max_iter=20, tol=1e-4),
              optim=Optim(lr=2e-3), num_classes=10, input_shape=(1, 28, 28))

    def make():
        torch.manual_seed(0)
        return DEQModule(**kw)

    def project():
        sub = Setup(x=x, y=y, batch=batch, epochs=setup.epochs, members=1, steps_per_call=1,
                    workdir=setup.workdir)
        return lightning_epoch_s(sub, make())

    def plain_side():
        net = make().net.to(x.device).train()
        return _plain_loop_epoch_s(net, x, y, batch, setup.epochs, lr=2e-3)

    r = alternate(setup, plain=plain_side, project=project)
    (plain_s, plain_mib), (project_s, project_mib) = r["plain"], r["project"]
    steps = -(-n // batch)
    return {"rows": [_row(f"DEQ step, batch {batch}, Anderson fwd + implicit bwd", project_s / steps,
                          plain_s / steps, target=1.1, per="/step")],
            "peak_mib": {"project": project_mib, "plain": plain_mib}}


@WORKLOADS.register("torchdeq")
def torchdeq_deq(setup: Setup) -> dict:
    """Our DEQ step vs the torchdeq package's on the same cell, weights, Anderson solves and implicit
    backward (`deq_torchdeq.py`, which also checks that both give the same fixed point and gradients);
    "plain" is torchdeq here. Skipped with a note where torchdeq is not installed (it is optional)."""
    from benchmarks import deq_torchdeq

    if not deq_torchdeq.available():
        return {"rows": [], "note": f"skipped: {deq_torchdeq.MISSING}"}
    batch = 128 if setup.cuda else 32
    report = deq_torchdeq.compare(setup.x[:batch], setup.y[:batch], steps=20 if setup.cuda else 10)
    ours, theirs = report["sides"]["ours"], report["sides"]["torchdeq"]
    what = f"DEQ step vs torchdeq, batch {batch}, configs/deq.yaml cell"
    rows = [_row(f"{what}, wall", ours["step_ms"] / 1e3, theirs["step_ms"] / 1e3, target=1.0, per="/step"),
            _row(f"{what}, saved for backward", ours["saved_mib"], theirs["saved_mib"], target=1.0, unit="MiB")]
    if ours["peak_mib"] is not None:
        rows.append(_row(f"{what}, peak CUDA memory", ours["peak_mib"], theirs["peak_mib"], target=1.0, unit="MiB"))
    check = report["agreement"]["converged"]
    note = (f"forward/backward solver evaluations ours {ours['forward_nfe']:g}/{ours['backward_nfe']:g}, "
            f"torchdeq {theirs['forward_nfe']:g}/{theirs['backward_nfe']:g}; converged float64 check: state "
            f"{check['state']:.1e}, gradients {check['grad_max']:.1e} apart (relative)")
    return {"rows": rows, "note": note, "torchdeq": report}
