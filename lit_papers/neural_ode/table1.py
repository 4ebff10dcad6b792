"""Chen et al. 2018, Table 1 from run folders: test error (mean ± sd over seeds), parameters, memory, NFE.

    python -m lit_papers.neural_ode.table1 /tmp/runs/table1_mnist5k/*/v0 /tmp/runs/table1_mnist1d/*/v0 \\
        --out docs/figures/neural_ode_table1.png

The folders are `NeuralODEModule` runs (e.g. of `configs/neural_ode_table1.yaml` through
`lit_papers.core.study`); they are grouped by dataset and `variant` from their config.yaml, each
group's folders being its seeds. Per group the markdown table (stdout) gives:

- test error: 1 - `test/acc`, mean ± sample sd over seeds, the seeds' values in parentheses;
- parameters (`node/params`), and ODE-Net's share of ResNet's under the table;
- memory: the paper's class (ResNet O(L), RK-Net O(L̃), ODE-Net O(1), L̃ = NFE-F), and the measured
  peak of the activations saved for backward in one training step of the first seed's trained
  network at `--batch` inputs (`lit_papers.core.saved_tensors`, exact, parameters excluded);
- time per step: the median of the logged `node/step_time_ms` over every logged step and seed
  (wall clock, so only comparable within one study on one machine);
- NFE-F / NFE-B: the solver's evaluations per training step, forward and in the adjoint's backward
  solve (0 without the adjoint).

The figure shows test error against parameters (one marker per model and dataset, sd as error
bars) and the measured activation memory per model.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lit_papers.core.figures import write_figure  # noqa: E402
from lit_papers.core.saved_tensors import training_step_saved_bytes  # noqa: E402
from lit_papers.core.study import init_args, mean_sd, metric_values, read_run, seed_cell  # noqa: E402

#: Table 1 order, labels, the paper's memory and time classes, and its full-MNIST numbers
MODELS = {
    "mlp": ("1-layer MLP", "–", "–", "1.60%, 0.24M"),
    "resnet": ("ResNet (6 blocks)", "O(L)", "O(L)", "0.41%, 0.60M"),
    "rknet": ("RK-Net (backprop through RK4)", "O(L̃)", "O(L̃)", "0.47%, 0.22M"),
    "odenet": ("ODE-Net (adjoint)", "O(1)", "O(L̃)", "0.42%, 0.22M"),
}


def group_runs(folders: Sequence[str | Path]) -> dict[tuple[str, str], list[dict]]:
    """{(dataset, variant): [run, ...]} in Table 1's order, datasets in the order first seen."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for folder in folders:
        run = read_run(folder)
        if run["summary"].get("module") != "NeuralODEModule":
            raise ValueError(f"{folder} is a {run['summary'].get('module')} run, not a NeuralODEModule run")
        variant = init_args(run)["variant"]
        dataset = init_args(run, "data").get("dataset", "?")
        groups.setdefault((dataset, variant), []).append(run)
    datasets = list(dict.fromkeys(d for d, _ in groups))
    return {(d, v): groups[(d, v)] for d in datasets for v in MODELS if (d, v) in groups}


def activation_bytes(run: dict, batch: int) -> int:
    """Peak saved-for-backward bytes of one training step of the run's trained network at `batch` inputs."""
    from lit_papers.core.load_module import load_module

    from .module import NeuralODEModule

    module = load_module(NeuralODEModule, run["folder"] / "checkpoints" / "last.ckpt", map_location="cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *module.hparams.input_shape, generator=gen)
    y = torch.randint(0, module.hparams.num_classes, (batch,), generator=gen)
    return training_step_saved_bytes(module.net, x, lambda logits: F.cross_entropy(logits, y))


def rows(groups: dict[tuple[str, str], list[dict]], batch: int = 64) -> list[dict]:
    """One row per (dataset, variant): errors per seed, params, memory, time, NFE."""
    out = []
    for (dataset, variant), runs in groups.items():
        params = {int(v) for r in runs for v in metric_values(r, "node/params")}
        times = [t for r in runs for t in metric_values(r, "node/step_time_ms")]
        finals = [r["summary"]["final"] for r in runs]
        nfe_f = {int(f["node/nfe_forward"]) for f in finals if "node/nfe_forward" in f}
        nfe_b = {int(f["node/nfe_backward"]) for f in finals if "node/nfe_backward" in f}
        out.append({
            "dataset": dataset, "variant": variant, "seeds": [r["summary"]["seed"] for r in runs],
            "error": [1.0 - f["test/acc"] for f in finals], "params": params,
            "activation_mb": activation_bytes(runs[0], batch) / 2**20,
            "step_ms": statistics.median(times) if times else float("nan"),
            "nfe": f"{'/'.join(map(str, sorted(nfe_f)))} / {'/'.join(map(str, sorted(nfe_b)))}" if nfe_f else "–",
            "wall_s": sum(r["summary"]["wall_time_s"] for r in runs),
        })
    return out


def parameter_ratio(table: Sequence[dict], dataset: str) -> float | None:
    """ODE-Net's parameters over ResNet's on `dataset` (None when either is missing)."""
    by = {r["variant"]: r for r in table if r["dataset"] == dataset}
    if "odenet" not in by or "resnet" not in by:
        return None
    return min(by["odenet"]["params"]) / min(by["resnet"]["params"])


def markdown_table(table: Sequence[dict], batch: int = 64) -> str:
    """One markdown table per dataset, laid out as the paper's Table 1 (plus measured columns)."""
    blocks = []
    for dataset in dict.fromkeys(r["dataset"] for r in table):
        sel = [r for r in table if r["dataset"] == dataset]
        n_seeds = sorted({len(r["error"]) for r in sel})
        lines = [f"**{dataset}** (seeds per model: {'/'.join(map(str, n_seeds))})", "",
                 f"| model | test error | params | memory | saved activations, batch {batch} | time | "
                 "time / step | NFE-F / NFE-B | paper (MNIST) |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in sel:
            label, memory, time_class, paper = MODELS[r["variant"]]
            params = "/".join(f"{p:,}" for p in sorted(r["params"]))
            lines.append(f"| {label} | {seed_cell(r['error'], 100.0, 2, ' %', 1)} | {params} | {memory} | "
                         f"{r['activation_mb']:.2f} MB | {time_class} | {r['step_ms']:.0f} ms | {r['nfe']} | "
                         f"{paper} |")
        ratio = parameter_ratio(table, dataset)
        if ratio is not None:
            lines += ["", f"ODE-Net / ResNet parameters: {ratio:.3f}"]
        wall = sum(r["wall_s"] for r in sel)
        lines += [f"Training wall time, all runs (fit + test, from summary.json): {wall:.0f} s"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def figure(table: Sequence[dict]):
    """Left: test error (mean ± sd) against parameters; right: measured activation memory per model."""
    fig, (ax_err, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
    datasets = list(dict.fromkeys(r["dataset"] for r in table))
    markers = {"mlp": "^", "resnet": "s", "rknet": "D", "odenet": "o"}
    width = 0.8 / max(len(datasets), 1)
    for i, (dataset, color) in enumerate(zip(datasets, ("C0", "C1", "C2", "C3"))):
        sel = [r for r in table if r["dataset"] == dataset]
        for r in sel:
            m, sd = mean_sd([100.0 * e for e in r["error"]])
            ax_err.errorbar(min(r["params"]), m, yerr=sd, marker=markers[r["variant"]], color=color, capsize=3,
                            ls="none", label=f"{dataset}: {r['variant']}")
            ax_err.annotate(r["variant"], (min(r["params"]), m), textcoords="offset points", xytext=(5, 4),
                            fontsize=7, color=color)
        xs = [list(MODELS).index(r["variant"]) + (i - (len(datasets) - 1) / 2) * width for r in sel]
        ax_mem.bar(xs, [r["activation_mb"] for r in sel], width=width, color=color, label=dataset)
    ax_err.set(xscale="log", xlabel="parameters", ylabel="test error (%)", title="test error vs parameters")
    ax_err.grid(alpha=0.3)
    ax_err.legend(fontsize=7, ncol=2)
    ax_mem.set_xticks(range(len(MODELS)), list(MODELS))
    ax_mem.set(ylabel="MB", title="activations saved for backward, one training step")
    ax_mem.grid(alpha=0.3, axis="y")
    ax_mem.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="NeuralODEModule run folders (one per model, dataset and seed)")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the activation-memory step")
    parser.add_argument("--out", help="write the figure here (PNG)")
    args = parser.parse_args(argv)
    try:
        table = rows(group_runs(args.folders), args.batch)
    except ValueError as err:
        parser.error(str(err))
    text = markdown_table(table, args.batch)
    print(text)
    if args.out:
        write_figure(figure(table), args.out)
    return text


if __name__ == "__main__":
    main()
