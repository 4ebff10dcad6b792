"""Several optimizer steps per training_step: same weights as ordinary steps, CPU fallback, grouping."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lit_papers.core import Optim
from lit_papers.core import ClassifierModule
from lit_papers.core.chunked_classifier import ChunkedClassifierModule
from lit_papers.core.step_capture import run_undone
from lit_papers.core.step_chunks import StepChunks
from lit_papers.data import VisionDataModule

SHAPES = dict(num_classes=10, input_shape=(1, 28, 28))


def _fit(model, epochs: int = 2, accelerator: str = "cpu", on_device: bool = False,
         dataset: str = "mnist5k") -> L.Trainer:
    # 500 training digits at batch 60: 8 full minibatches and a short one of 20 per epoch
    dm = VisionDataModule(dataset=dataset, batch_size=60, val_size=100, train_subset=500,
                          eval_batch_size=500, on_device=on_device)
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return trainer


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("optimizer,schedule", [("adam", "cosine"), ("sgd", "step")])
def test_chunked_steps_equal_ordinary_steps(optimizer, schedule):
    """S=4 steps per training_step (groups 4, 4, 1 per epoch) == 9 ordinary steps per epoch."""
    kw = dict(SHAPES, optim=Optim(name=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3, schedule=schedule))
    torch.manual_seed(3)
    plain = ClassifierModule(**kw)
    t_plain = _fit(plain)
    torch.manual_seed(3)
    chunked = ChunkedClassifierModule(steps_per_call=4, **kw)
    t_chunked = _fit(chunked)
    assert t_chunked.global_step == t_plain.global_step == 18  # optimizer steps, not calls
    assert t_chunked.num_training_batches == 3  # three training_step calls per epoch
    assert _max_diff(plain, chunked) < 1e-6
    lr_plain = t_plain.optimizers[0].param_groups[0]["lr"]
    assert float(t_chunked.optimizers[0].param_groups[0]["lr"]) == pytest.approx(lr_plain)
    assert float(t_chunked.callback_metrics["val/acc"]) == pytest.approx(
        float(t_plain.callback_metrics["val/acc"]))
    assert float(t_chunked.callback_metrics["train/acc"]) == pytest.approx(
        float(t_plain.callback_metrics["train/acc"]), abs=1e-6)


def test_accelerated_modes_fall_back_to_eager_on_cpu():
    torch.manual_seed(1)
    eager = ChunkedClassifierModule(steps_per_call=3, **SHAPES)
    _fit(eager, epochs=1)
    torch.manual_seed(1)
    graph = ChunkedClassifierModule(steps_per_call=3, step_capture="cuda_graph", **SHAPES)
    with pytest.warns(UserWarning, match="needs a CUDA device"):
        _fit(graph, epochs=1)
    assert graph.capture_mode == "none"
    assert _max_diff(eager, graph) == 0.0


def test_step_chunks_keep_order_and_isolate_the_short_batch():
    batches = [(torch.full((4, 2), float(i)), torch.full((4,), i)) for i in range(7)]
    batches.append((torch.full((1, 2), 7.0), torch.full((1,), 7)))  # the short last minibatch

    class Loader(list):
        batch_size = 4
        dataset = range(29)  # 7 full batches + 1

    chunks = StepChunks(Loader(batches), steps=3)
    got = list(chunks)
    assert [tuple(x.shape[:2]) for x, _ in got] == [(3, 4), (3, 4), (1, 4), (1, 1)]
    assert torch.cat([y.flatten() for _, y in got]).tolist() == [i for i in range(7) for _ in range(4)] + [7]
    assert len(chunks) == 4 and chunks.minibatches(2) == 6 and chunks.minibatches(4) == 8

    class DropLast(Loader):
        drop_last = True  # the short minibatch is never drawn: 7 full ones

    dropped = StepChunks(DropLast(batches[:7]), steps=4)
    assert [len(x) for x, _ in dropped] == [4, 3]
    assert len(dropped) == 2 and dropped.minibatches(1) == 4 and dropped.minibatches(2) == 7


def test_step_chunks_translate_resume_state_to_minibatches():
    """A loader that records (epoch, batches done) for mid-epoch resume counts Lightning's batches,
    i.e. groups; the wrapper hands it minibatches."""
    class Loader(list):
        batch_size, dataset, loaded = 4, range(28), None

        def state_dict(self):
            return {"epoch": 1, "batches_done": 2}  # two groups trained

        def load_state_dict(self, state):
            self.loaded = state

    inner = Loader([(torch.zeros(4, 2), torch.zeros(4))] * 7)
    chunks = StepChunks(inner, steps=3)
    assert chunks.state_dict() == {"epoch": 1, "batches_done": 6}
    chunks.load_state_dict({"epoch": 1, "batches_done": 6})
    assert inner.loaded == {"epoch": 1, "batches_done": 6}


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)],
    ids=["adam", "sgd_nesterov"])
@pytest.mark.parametrize("steps_before", [0, 2])
def test_capture_warmup_is_undone(make_opt, steps_before):
    """What CUDA-graph capture does before replay 1 (warm-up steps that create optimizer state)
    leaves weights, BatchNorm statistics and optimizer state as they were: the run continues on
    the eager trajectory, whether the optimizer had state before (resume) or not."""
    batches = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(7)]
    eager = _train_small(make_opt, batches, steps_before, warm=False)
    warmed = _train_small(make_opt, batches, steps_before, warm=True)
    torch.testing.assert_close(warmed, eager, atol=1e-6, rtol=1e-6)


def _train_small(make_opt, batches, steps_before: int, warm: bool) -> dict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    opt = make_opt(net.parameters())

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for x, y in batches[:steps_before]:
        step(x, y)
    if warm:  # three steps on a different batch, as capture's warm-up does, then undone
        noise = (torch.randn(16, 6) * 5, torch.randint(0, 3, (16,)))
        run_undone(lambda: [step(*noise) for _ in range(3)], opt, [*net.parameters(), *net.buffers()])
    for x, y in batches[steps_before:]:
        step(x, y)
    return net.state_dict()


def test_bad_settings_name_the_valid_options():
    with pytest.raises(ValueError, match="cuda_graph"):
        ChunkedClassifierModule(step_capture="graphs", **SHAPES)
    with pytest.raises(ValueError, match="steps_per_call"):
        ChunkedClassifierModule(steps_per_call=0, **SHAPES)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cuda_graph_steps_equal_eager_steps(optimizer):
    """Captured whole steps (warm-up undone) follow the eager trajectory on the GPU."""
    # scikit-learn's 8x8 digits: no download, no extra package on a bare GPU machine
    kw = dict(num_classes=10, input_shape=(1, 8, 8),
              optim=Optim(name=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3))
    torch.manual_seed(2)
    eager = ChunkedClassifierModule(steps_per_call=4, **kw)
    _fit(eager, accelerator="gpu", on_device=True, dataset="digits")
    torch.manual_seed(2)
    graph = ChunkedClassifierModule(steps_per_call=4, step_capture="cuda_graph", **kw)
    _fit(graph, accelerator="gpu", on_device=True, dataset="digits")
    assert graph.capture_mode == "cuda_graph" and graph.stepper.graph is not None
    assert _max_diff(eager, graph) < 1e-4
