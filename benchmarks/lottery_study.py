"""Timing of the paper-scale LeNet lottery study (`configs/paper/lottery_lenet_study.yaml`).

The study trains 5 seeds x (ticket, reinit, random_prune) = 15 members for 21 levels of 50K
iterations (1.05M population steps). This script runs the same module with the same settings
(LeNet-300-100, Adam 1.2e-3, batch 60, validation on 5K images every 100 iterations, test on 10K at
every level end, steps per call and capture as in the config) on 60K synthetic MNIST-shaped
samples held on the device, for `--levels` levels of `--round-steps` iterations, and projects the
full study from the measured wall time per iteration (which includes evaluations, pruning,
resets and Lightning's loop). Next to it, the plain eager single-network loop of `plain.py` on
the same tensors gives the time of the 315 trainings run one after another (evaluation not counted).

    python -m benchmarks.lottery_study                       # GPU: 2 levels x 10K iterations, ~1 min
    OMP_NUM_THREADS=1 python -m benchmarks.lottery_study --small   # CPU: seconds, a plumbing check

Writes `benchmarks/results/<device>_lottery_study.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import lightning as L
import torch

from benchmarks import plain
from benchmarks.output import RESULTS, device_name
from lit_papers.core import Optim
from lit_papers.data.device_loader import DeviceBatches
from lit_papers.lottery.population import LotteryPopulationModule

PAPER = dict(seeds=5, controls=("ticket", "reinit", "random_prune"), levels=21, round_steps=50_000, batch=60)


class SyntheticMNIST(L.LightningDataModule):
    """60K/5K/10K MNIST-shaped samples on the device, labelled by a fixed random linear teacher."""

    def __init__(self, device: torch.device, train: int, val: int, test: int, batch: int, eval_batch: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.rand(train + val + test, 1, 28, 28, generator=g)
        teacher = torch.randn(784, 10, generator=g)
        y = (x.flatten(1) @ teacher).argmax(1)
        x = (x - 0.5) / 0.5
        self.splits = [t.to(device) for t in (x, y)]
        self.sizes, self.batch, self.eval_batch = (train, val, test), batch, eval_batch
        self.batch_grouping = None  # set by ChunkedSteps.setup (steps per call)
        self.num_classes, self.input_shape = 10, (1, 28, 28)

    def _part(self, i: int):
        start = sum(self.sizes[:i])
        return self.splits[0][start:start + self.sizes[i]], self.splits[1][start:start + self.sizes[i]]

    def train_dataloader(self):
        loader = DeviceBatches(*self._part(0), self.batch, shuffle=True,
                               epoch_fn=lambda: self.trainer.current_epoch)
        return self.batch_grouping(loader) if self.batch_grouping is not None else loader

    def val_dataloader(self):
        return DeviceBatches(*self._part(1), self.eval_batch, shuffle=False)

    def test_dataloader(self):
        return DeviceBatches(*self._part(2), self.eval_batch, shuffle=False)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU-sized: 2 seeds, 6K samples, 200-step levels")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (members = 3 x seeds; default 5)")
    parser.add_argument("--levels", type=int, default=2, help="levels timed (dense + levels-1 rounds)")
    parser.add_argument("--round-steps", type=int, default=None, help="iterations per level (default 10K)")
    parser.add_argument("--steps-per-call", type=int, default=50)
    parser.add_argument("--capture", default=None, help="step_capture (default cuda_graph on a GPU, else none)")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seeds = args.seeds or (2 if args.small else PAPER["seeds"])
    round_steps = args.round_steps or (200 if args.small else 10_000)
    train, val, test = (6000, 500, 1000) if args.small else (60_000, 5000, 10_000)
    capture = args.capture or ("cuda_graph" if device.type == "cuda" else "none")
    dm = SyntheticMNIST(device, train, val, test, PAPER["batch"], eval_batch=val)

    model = LotteryPopulationModule(
        num_classes=10, input_shape=(1, 28, 28), optim=Optim(name="adam", lr=1.2e-3), seeds=list(range(seeds)),
        controls=PAPER["controls"], rounds=args.levels - 1, round_steps=round_steps, eval_every=100,
        prune_rate=0.2, output_prune_rate=0.1, steps_per_call=args.steps_per_call, step_capture=capture)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_epochs=-1, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, default_root_dir=tmp)
        plain.sync(device)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        plain.sync(device)
        wall = time.perf_counter() - t0
    steps = trainer.global_step
    assert steps == args.levels * round_steps, (steps, args.levels, round_steps)
    per_it = wall / steps
    x_train, y_train = dm._part(0)
    eager_epoch = plain.eager_epoch_s(x_train, y_train, PAPER["batch"], epochs=2)
    eager_step = eager_epoch / -(-len(x_train) // PAPER["batch"])
    full_steps = PAPER["levels"] * PAPER["round_steps"]
    trainings = PAPER["seeds"] * len(PAPER["controls"]) * PAPER["levels"]
    scale = PAPER["seeds"] / seeds  # projection from fewer members assumes linear cost in members
    report = {
        "device_name": device_name(device), "torch": torch.__version__, "lightning": L.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.lottery_study", *sys.argv[1:]]),
        "members": model.num_members, "levels_timed": args.levels, "round_steps": round_steps,
        "step_capture": model.capture_mode, "steps_per_call": args.steps_per_call, "train_samples": train,
        "wall_s": wall, "population_iteration_s": per_it,
        "projected_study_s": per_it * full_steps * scale,
        "plain_eager_step_s": eager_step,
        "projected_plain_eager_study_s": eager_step * PAPER["round_steps"] * trainings,
        "final_densities": model.densities(),
        "level_rows_member0": model.histories[0],
    }
    report["speedup"] = report["projected_plain_eager_study_s"] / report["projected_study_s"]
    report["target_met"] = report["projected_study_s"] <= 600 if device.type == "cuda" else None
    out = RESULTS / f"{report['device_name']}_lottery_study"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(r: dict) -> str:
    return "\n".join([
        f"# LeNet lottery study timing on {r['device_name']}", "",
        f"torch {r['torch']}, lightning {r['lightning']}, {r['when']}, command: `{r['command']}`", "",
        f"Timed: {r['members']} members (3 controls), {r['levels_timed']} levels x {r['round_steps']} iterations "
        f"on {r['train_samples']} synthetic MNIST-shaped samples, step_capture={r['step_capture']}, "
        f"{r['steps_per_call']} steps per call, validation every 100 iterations, test at every level end.", "",
        "| | measured | full study (15 members x 21 levels x 50K iterations) |",
        "| --- | --- | --- |",
        f"| LotteryPopulationModule | {1e3 * r['population_iteration_s']:.3f} ms per iteration of all members "
        f"({r['wall_s']:.1f} s wall) | {r['projected_study_s'] / 60:.1f} min (projected) |",
        f"| plain eager loop, one network at a time | {1e3 * r['plain_eager_step_s']:.3f} ms per step | "
        f"{r['projected_plain_eager_study_s'] / 3600:.1f} h (projected, 315 trainings, no evaluation) |",
        f"| speed-up | | {r['speedup']:.1f}x |", "",
        "Target (one H200): full study <= 10 min." + ("" if r["target_met"] is None else
                                                       f" Met: {'yes' if r['target_met'] else 'no'}."),
        ""])


if __name__ == "__main__":
    main()
