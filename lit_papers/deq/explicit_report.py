"""DEQ against explicit nets of the same cell, from run folders: test accuracy over seeds, memory against depth L.

    python -m lit_papers.deq.explicit_report /tmp/runs/deq_vs_explicit/*/v0 --depths 2 4 8 16 32 \\
        --out docs/figures/deq_vs_explicit_mnist1d.png

The folders are runs of `configs/deq_mnist1d.yaml` (e.g. through `lit_papers.core.study`): the DEQ
(`DEQModule`), and the explicit nets (`ClassifierModule` with `arch: weight_tied`), weight-tied
(`tied: true`: the DEQ's own stem, cell and head, the cell applied L times) or untied (`tied: false`:
L independent cells). Runs are grouped by kind and L; a group's folders are its seeds.

Printed (markdown): per group the test accuracy (mean ± sample sd over seeds, the seeds' values in
parentheses), the parameters, the training wall time per run (fit + test, from summary.json), the
forward solver's iterations for the DEQ; then the activation memory against L: the peak bytes of the
tensors saved for backward in one training step at `--batch` inputs (`lit_papers.core.saved_tensors`,
exact, parameters excluded) of the DEQ's trained cell run for exactly L forward and L backward solver
iterations (tolerance 0), and of the weight-tied and untied nets of depth L built from the same cell
settings. The figure shows both: accuracy against L (the DEQ, which has no depth, as a band) and memory
against L.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lit_papers.core.figures import write_figure  # noqa: E402
from lit_papers.core.saved_tensors import training_step_saved_bytes  # noqa: E402
from lit_papers.core.study import init_args, mean_sd, read_run, seed_cell  # noqa: E402

KINDS = {"deq": "DEQ (implicit, IFT gradients)", "tied": "explicit, weight-tied", "untied": "explicit, untied"}


def kind_and_depth(run: dict) -> tuple[str, int | None]:
    """("deq", None), ("tied", L) or ("untied", L) from the run's config."""
    module = run["summary"].get("module")
    args = init_args(run)
    if module == "DEQModule":
        return "deq", None
    arch_kwargs = args.get("arch_kwargs") or {}
    if module == "ClassifierModule" and args.get("arch") == "weight_tied":
        return ("tied" if arch_kwargs.get("tied", True) else "untied"), int(arch_kwargs.get("depth", 8))
    raise ValueError(f"{run['folder']}: neither a DEQModule run nor an explicit weight_tied ClassifierModule run "
                     f"(module {module}, arch {args.get('arch')})")


def group_runs(folders: Sequence[str | Path]) -> dict[tuple[str, int | None], list[dict]]:
    """{(kind, L): [run, ...]}: the DEQ first, then the explicit nets by kind and depth."""
    groups: dict[tuple[str, int | None], list[dict]] = {}
    for folder in folders:
        run = read_run(folder)
        groups.setdefault(kind_and_depth(run), []).append(run)
    order = sorted(groups, key=lambda k: (list(KINDS).index(k[0]), k[1] or 0))
    return {k: groups[k] for k in order}


def load_network(run: dict) -> tuple[torch.nn.Module, tuple[int, ...], int]:
    """(network, input shape, classes) of the run's last checkpoint, on the CPU."""
    from lit_papers.core import ClassifierModule
    from lit_papers.core.load_module import load_module

    from .module import DEQModule

    cls = DEQModule if run["summary"]["module"] == "DEQModule" else ClassifierModule
    with contextlib.redirect_stdout(io.StringIO()):  # the modules print their size when built
        module = load_module(cls, run["folder"] / "checkpoints" / "last.ckpt", map_location="cpu")
    return module.net, tuple(module.hparams.input_shape), int(module.hparams.num_classes)


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def step_bytes(net: torch.nn.Module, input_shape, num_classes: int, batch: int) -> int:
    """Peak saved-for-backward bytes of one training step of `net` on a random batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *input_shape, generator=gen)
    y = torch.randint(0, num_classes, (batch,), generator=gen)
    return training_step_saved_bytes(net, x, lambda logits: F.cross_entropy(logits, y))


def memory_rows(deq_run: dict, depths: Sequence[int], batch: int) -> list[dict]:
    """Activation memory of one training step against L: the trained DEQ at exactly L solver iterations
    (forward and backward), and fresh weight-tied / untied nets of depth L with the DEQ's cell settings."""
    from lit_papers.core.renamed_keys import upgrade_mapping
    from lit_papers.models import build_model

    from .network import DEQNet
    from .settings import Backward, Solver

    deq, shape, classes = load_network(deq_run)
    hp = upgrade_mapping({"model": {"init_args": init_args(deq_run)}})["model"]["init_args"]  # old runs: flat keys
    solver, backward = Solver.of(hp.get("solver")), Backward.of(hp.get("backward"))
    cell_kwargs = {"groups": hp.get("groups", 8), "hidden": hp.get("hidden"),
                   "weight_norm": hp.get("weight_norm", True)}
    common = dict(cell=hp.get("cell", "conv"), width=hp.get("width", 32), downsample=hp.get("downsample", 1),
                  pool=hp.get("pool", 1))
    out = []
    for depth in depths:
        exact = DEQNet(shape, classes, cell_kwargs=cell_kwargs, solver=solver.name, max_iter=depth, tol=0.0,
                       backward_solver=backward.solver, backward_max_iter=depth, backward_tol=0.0, **common)
        exact.load_state_dict(deq.state_dict())
        row = {"depth": depth, "deq": step_bytes(exact, shape, classes, batch)}
        for kind in ("tied", "untied"):
            net = build_model("weight_tied", shape, classes, depth=depth, tied=kind == "tied", **common, **cell_kwargs)
            row[kind] = step_bytes(net, shape, classes, batch)
        out.append(row)
    return out


def rows(groups: dict[tuple[str, int | None], list[dict]]) -> list[dict]:
    """One row per (kind, L): accuracies per seed, parameters, wall time per run, DEQ solver iterations."""
    out = []
    for (kind, depth), runs in groups.items():
        finals = [r["summary"]["final"] for r in runs]
        iters = [f["deq/val_fwd_iters"] for f in finals if "deq/val_fwd_iters" in f]
        out.append({"kind": kind, "depth": depth, "seeds": [r["summary"]["seed"] for r in runs],
                    "acc": [f["test/acc"] for f in finals], "params": count_parameters(load_network(runs[0])[0]),
                    "wall_s": [r["summary"]["wall_time_s"] for r in runs],
                    "fwd_iters": mean_sd(iters)[0] if iters else None})
    return out


def markdown(table: Sequence[dict], memory: Sequence[dict], batch: int) -> str:
    lines = ["| model | L | params | test accuracy | training time per run | solver iterations (val) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        wall_m, _ = mean_sd(r["wall_s"])
        iters = f"{r['fwd_iters']:.1f}" if r["fwd_iters"] is not None else "–"
        lines.append(f"| {KINDS[r['kind']]} | {r['depth'] or '–'} | {r['params']:,} | "
                     f"{seed_cell(r['acc'], 100.0, 2, ' %', 1)} | {wall_m:.0f} s | {iters} |")
    lines += ["", f"Activations saved for backward, one training step at batch {batch}:", "",
              "| L | DEQ, L forward + L backward iterations | weight-tied, depth L | untied, depth L |",
              "| --- | --- | --- | --- |"]
    for m in memory:
        lines.append(f"| {m['depth']} | {m['deq'] / 2**20:.3f} MB | {m['tied'] / 2**20:.3f} MB | "
                     f"{m['untied'] / 2**20:.3f} MB |")
    return "\n".join(lines)


def figure(table: Sequence[dict], memory: Sequence[dict]):
    """Left: test accuracy against L (mean ± sd; the DEQ as a band); right: saved activations against L."""
    fig, (ax_acc, ax_mem) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"deq": ("C1", "s-"), "tied": ("C0", "o-"), "untied": ("C2", "D-")}
    for kind in ("tied", "untied"):
        sel = [r for r in table if r["kind"] == kind]
        if sel:
            stats = [mean_sd([100.0 * a for a in r["acc"]]) for r in sel]
            ax_acc.errorbar([r["depth"] for r in sel], [s[0] for s in stats], yerr=[s[1] for s in stats],
                            fmt=styles[kind][1], color=styles[kind][0], capsize=3, label=KINDS[kind])
    for r in (r for r in table if r["kind"] == "deq"):
        m, sd = mean_sd([100.0 * a for a in r["acc"]])
        ax_acc.axhline(m, color=styles["deq"][0], ls="--", label=f"{KINDS['deq']} (no depth)")
        ax_acc.axhspan(m - sd, m + sd, color=styles["deq"][0], alpha=0.15)
    ax_acc.set(xscale="log", xlabel="depth L (cell applications)", ylabel="test accuracy (%)",
               title="accuracy (mean ± sd over seeds)")
    depths = [m["depth"] for m in memory]
    for kind in ("deq", "tied", "untied"):
        label = "DEQ, L forward + L backward iterations" if kind == "deq" else KINDS[kind]
        ax_mem.plot(depths, [m[kind] / 2**20 for m in memory], styles[kind][1], color=styles[kind][0], label=label)
    ax_mem.set(xscale="log", xlabel="depth L", ylabel="MB", title="activations saved for backward, one training step")
    for ax in (ax_acc, ax_mem):
        ax.set_xticks(depths or [1], [str(d) for d in depths] or ["1"])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="run folders of the DEQ and the explicit nets (one per seed)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 32],
                        help="depths L of the memory measurement")
    parser.add_argument("--batch", type=int, default=128, help="batch size of the memory measurement")
    parser.add_argument("--out", help="write the figure here (PNG)")
    args = parser.parse_args(argv)
    try:
        groups = group_runs(args.folders)
    except ValueError as err:
        parser.error(str(err))
    deq_runs = [runs for (kind, _), runs in groups.items() if kind == "deq"]
    if not deq_runs:
        parser.error("no DEQModule run among the folders: the memory measurement uses the DEQ's trained cell")
    table = rows(groups)
    memory = memory_rows(deq_runs[0][0], args.depths, args.batch)
    text = markdown(table, memory, args.batch)
    print(text)
    if args.out:
        write_figure(figure(table, memory), args.out)
    return text


if __name__ == "__main__":
    main()
