"""Read FGE run folders (`fge.json`) and tabulate / plot the equal-budget comparison over seeds.

    python -m lit_papers.mode_connectivity.fge_report \\
        --group fge runs/fge_mnist1d_s{0,1,2}/version_0 \\
        --group independent runs/fge_mnist1d_ind_s{0,1,2}/version_0 \\
        --out docs/figures/fge_mnist1d.png

Each `--group NAME FOLDER...` is one method; its folders are seeds. The table (markdown, on
stdout) has one row per method's ensemble, its best member (the member with the highest
accuracy), and, for runs with `single_baseline`, the single network trained in the same run with
the ordinary schedule for the whole budget: accuracy and NLL as mean +- sample sd over seeds, the
seeds' values in parentheses. `--split val` tabulates the validation split instead (for choosing
hyper-parameters); the test split is the default. The figure shows the ensemble of the first k
members against k (mean +- sd band), the members themselves, and the single network.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lit_papers.core.figures import write_figure  # noqa: E402
from lit_papers.core.study import mean_sd, read_groups  # noqa: E402


def read_run(folder: str | Path) -> dict:
    """The `fge.json` record of one FGEModule run folder: config, members (per-member metrics), single."""
    path = Path(folder) / "fge.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not an FGE run folder (no fge.json); run FGEModule with a CSV logger")
    return json.loads(path.read_text())


def _cell(values: Sequence[float], percent: bool) -> str:
    """`mean ± sd (seed values)`: accuracy in % (2 decimals, seeds 1), NLL with 3 decimals."""
    scale, digits, seed_digits, unit = (100.0, 2, 1, " %") if percent else (1.0, 3, 3, "")
    m, sd = mean_sd([scale * v for v in values])
    seeds = ", ".join(f"{scale * v:.{seed_digits}f}" for v in values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}{unit} ({seeds})"


def rows(groups: Mapping[str, Sequence[dict]], split: str = "test") -> list[dict]:
    """Table rows: per group, its ensemble and best member, and its single network where recorded."""
    p = "fge/" if split == "test" else "fge/val_"
    out = []
    for name, runs in groups.items():
        last = [r["members"][-1] for r in runs]
        best = [max(r["members"], key=lambda m: m[f"{p}member_acc"]) for r in runs]
        members = {int(m["fge/members"]) for m in last}
        epochs = {r["config"]["max_epochs"] for r in runs}
        out.append({"method": f"{name} ensemble", "members": members, "epochs": epochs,
                    "acc": [m[f"{p}ensemble_acc"] for m in last], "nll": [m[f"{p}ensemble_nll"] for m in last]})
        out.append({"method": f"{name}: best member", "members": {1}, "epochs": epochs,
                    "acc": [m[f"{p}member_acc"] for m in best], "nll": [m[f"{p}member_nll"] for m in best]})
        singles = [r["single"] for r in runs if r.get("single")]
        if singles:
            s = "fge/single" if split == "test" else "fge/val_single"
            out.append({"method": f"{name}: single network, ordinary schedule", "members": {1}, "epochs": epochs,
                        "acc": [x[f"{s}_acc"] for x in singles], "nll": [x[f"{s}_nll"] for x in singles]})
    return out


def markdown_table(table: Sequence[dict], split: str = "test") -> str:
    """The rows as a markdown table (accuracy in %, NLL, mean ± sd over seeds)."""
    def fmt(values: set) -> str:
        return "/".join(str(v) for v in sorted(values))

    lines = [f"| method | members | epochs | {split} accuracy | {split} NLL | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        lines.append(f"| {r['method']} | {fmt(r['members'])} | {fmt(r['epochs'])} | {_cell(r['acc'], True)} | "
                     f"{_cell(r['nll'], False)} | {len(r['acc'])} |")
    return "\n".join(lines)


def members_figure(groups: Mapping[str, Sequence[dict]], split: str = "test"):
    """Ensemble (first k members) and member accuracy / NLL against k, mean ± sd over seeds, per group;
    the single network of the same budget as a horizontal band."""
    p = "fge/" if split == "test" else "fge/val_"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for color, (name, runs) in zip(("C0", "C1", "C2", "C3", "C4"), groups.items()):
        k_max = min(len(r["members"]) for r in runs)
        ks = list(range(1, k_max + 1))
        for ax, metric, scale in zip(axes, ("acc", "nll"), (100.0, 1.0)):
            for kind, style, label in (("ensemble", "o-", f"{name}: ensemble of first k"),
                                       ("member", "s--", f"{name}: member k")):
                stats = [mean_sd([scale * r["members"][k - 1][f"{p}{kind}_{metric}"] for r in runs]) for k in ks]
                m = [s[0] for s in stats]
                sd = [s[1] for s in stats]
                ax.plot(ks, m, style, color=color, alpha=1.0 if kind == "ensemble" else 0.6, label=label)
                if kind == "ensemble":
                    ax.fill_between(ks, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                                    color=color, alpha=0.15)
            singles = [r["single"] for r in runs if r.get("single")]
            if singles:
                s = "fge/single" if split == "test" else "fge/val_single"
                m, sd = mean_sd([scale * x[f"{s}_{metric}"] for x in singles])
                ax.axhline(m, color="k", ls=":", label=f"{name}: single net, same budget")
                ax.axhspan(m - sd, m + sd, color="k", alpha=0.08)
    axes[0].set(xlabel="members k", ylabel=f"{split} accuracy (%)", title="accuracy")
    axes[1].set(xlabel="members k", ylabel=f"{split} NLL", title="NLL")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "FOLDER"),
                        help="a method's name, then its run folders (one per seed)")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--out", help="write the figure here (PNG)")
    args = parser.parse_args(argv)
    groups = read_groups(parser, args.group, read_run)
    table = markdown_table(rows(groups, args.split), args.split)
    print(table)
    if args.out:
        write_figure(members_figure(groups, args.split), args.out)
    return table


if __name__ == "__main__":
    main()
