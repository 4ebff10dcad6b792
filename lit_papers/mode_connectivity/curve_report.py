"""Read CurveModule run folders (`curve_eval.csv`) and tabulate / plot curves vs segments over endpoint pairs.

    python -m lit_papers.mode_connectivity.curve_report \\
        --group Bezier runs/mc_mnist1d_bezier_p{1,2,3}/version_0 \\
        --group PolyChain runs/mc_mnist1d_polychain_p{1,2,3}/version_0 \\
        --out docs/figures/mode_connectivity_mnist1d.png

Each `--group NAME FOLDER...` is one curve family; its folders are endpoint pairs (each run trained
or loaded its own pair). Every folder holds the per-t evaluation of its trained curve and of the
straight segment between the same endpoints, with BatchNorm statistics recomputed at every t
(`curve_eval.csv`). The table (markdown, on stdout) has a row for the segment, one per curve
family and one for the endpoints: the summaries of `evaluation.summarize` along each path, as mean
+- sample sd over the pairs with the pairs' values in parentheses. The barrier of a quantity along
a path is its maximum over t minus the mean of its values at the two endpoints,
max_t f(t) - (f(0) + f(1)) / 2. A group whose segments are the ones of an earlier group (the same
endpoint pairs) adds no second segment row. The figure shows train loss and test error against t,
mean +- sd band over the pairs, for the segment and every curve family.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import yaml

from lit_papers.core.figures import write_figure
from lit_papers.core.renamed_keys import upgrade_mapping
from lit_papers.core.study import read_groups, seed_cell

from .evaluation import summarize

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PATHS = ("curve", "segment")
KEYS = ("train_loss", "train_nll", "train_err", "test_nll", "test_err", "dl")

# (column header, quantity, summary, decimals): the table's columns
COLUMNS = (("max train loss (NLL + L2)", "train_loss", "max", 3),
           ("train-loss barrier", "train_loss", "barrier", 3),
           ("max train NLL", "train_nll", "max", 3),
           ("max train error (%)", "train_err", "max", 2),
           ("max test error (%)", "test_err", "max", 2),
           ("test-error barrier (pp)", "test_err", "barrier", 2))


def read_run(folder: str | Path) -> dict:
    """One CurveModule run folder: per-t arrays of its curve and segment, its curve family and endpoint seeds."""
    folder = Path(folder)
    path = folder / "curve_eval.csv"
    if not path.is_file():
        raise ValueError(f"{folder} is not a finished CurveModule run folder (no curve_eval.csv, written "
                         "after the curve phase's last epoch)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no evaluated t")
    missing = [f"{p}/{k}" for p in PATHS for k in KEYS if f"{p}/{k}" not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}")
    run = {"folder": str(folder), "t": np.array([float(r["t"]) for r in rows])}
    for p in PATHS:
        run[p] = {k: np.array([float(r[f"{p}/{k}"]) for r in rows]) for k in KEYS}
    config = folder / "config.yaml"
    saved = (yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    model = upgrade_mapping(saved).get("model") or {}  # runs from before the curve group, too
    curve = (model.get("init_args", model) or {}).get("curve") or {}
    run["curve_name"] = curve.get("kind", "curve")
    run["endpoint_seeds"] = curve.get("endpoint_seeds") if curve.get("endpoints") is None else curve.get("endpoints")
    return run


def path_summary(path: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """quantity -> summarize() of it along the path (start, end, min, max, mean, integral, barrier)."""
    return {k: summarize(path[k], path["dl"]) for k in KEYS if k != "dl"}


def _same_segments(a: Sequence[dict], b: Sequence[dict]) -> bool:
    return len(a) == len(b) and all(
        len(x["t"]) == len(y["t"]) and all(np.allclose(x["segment"][k], y["segment"][k], rtol=1e-5, atol=1e-7)
                                           for k in KEYS)
        for x, y in zip(a, b))


def rows(groups: Mapping[str, Sequence[dict]]) -> list[dict]:
    """Table rows: the segment (once per distinct set of endpoint pairs), each group's curve, the endpoints.

    Each row maps a column header to the per-pair values, plus `path`, `pairs` and `length`.
    """
    out: list[dict] = []
    seen: list[Sequence[dict]] = []
    for name, runs in groups.items():
        if not any(_same_segments(runs, s) for s in seen):
            label = "straight segment" if not seen else f"straight segment ({name} endpoints)"
            out.append(_row(label, [path_summary(r["segment"]) for r in runs], [r["segment"] for r in runs]))
            seen.append(runs)
        curves = [r["curve"] for r in runs]
        out.append(_row(f"{name} curve (trained)", [path_summary(c) for c in curves], curves))
    first = next(iter(groups.values()))
    ends = [path_summary(r["segment"]) for r in first]
    endpoints = {"path": "endpoints w_0 / w_1", "pairs": len(first), "length": None, "endpoints": True}
    for header, key, stat, _ in COLUMNS:  # the endpoint networks' own values (no barrier)
        endpoints[header] = None if stat == "barrier" else ([s[key]["start"] for s in ends],
                                                            [s[key]["end"] for s in ends])
    out.append(endpoints)
    return out


def _row(label: str, summaries: Sequence[dict], paths: Sequence[Mapping[str, np.ndarray]]) -> dict:
    row = {"path": label, "pairs": len(summaries), "length": [float(p["dl"].sum()) for p in paths]}
    for header, key, stat, _ in COLUMNS:
        row[header] = [s[key][stat] for s in summaries]
    return row


def markdown_table(table: Sequence[dict]) -> str:
    """The rows as a markdown table: mean ± sd over endpoint pairs, the pairs' values in parentheses."""
    headers = [c[0] for c in COLUMNS]
    lines = ["| path | " + " | ".join(headers) + " | length ‖Δw‖ | pairs |",
             "|" + " --- |" * (len(headers) + 3)]
    for r in table:
        cells = [r["path"]]
        for header, _, _, digits in COLUMNS:
            value = r[header]
            if value is None:
                cells.append("–")
            elif r.get("endpoints"):  # (w_0 values, w_1 values): their means over the pairs
                cells.append(" / ".join(f"{statistics.fmean(v):.{digits}f}" for v in value))
            else:
                cells.append(seed_cell(value, digits=digits))
        cells.append("–" if r["length"] is None else seed_cell(r["length"], digits=1))
        cells.append(str(r["pairs"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paths_figure(groups: Mapping[str, Sequence[dict]], title: str = ""):
    """Train loss (log y) and test error against t: mean ± sd band over the pairs, segment and curves."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    first = next(iter(groups.values()))
    lines = [("straight segment", first, "segment", dict(color="C3", ls="--"))]
    lines += [(f"{name} curve", runs, "curve", dict(color=f"C{i}")) for i, (name, runs) in enumerate(groups.items())]
    for ax, key, label in zip(axes, ("train_loss", "test_err"), ("train loss (NLL + L2)", "test error (%)")):
        for name, runs, path, style in lines:
            lengths = {len(r["t"]) for r in runs}
            if len(lengths) != 1:
                raise ValueError(f"{name}: the runs were evaluated on different t grids ({sorted(lengths)} points)")
            values = np.stack([r[path][key] for r in runs])
            m, sd = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else np.zeros(values.shape[1])
            t = runs[0]["t"]
            ax.plot(t, m, label=f"{name} (n={len(runs)})", **style)
            ax.fill_between(t, m - sd, m + sd, color=style["color"], alpha=0.2)
        if key == "train_loss":
            ax.set_yscale("log")
        ax.set(xlabel="t", ylabel=label, title=f"{label} along the path")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "FOLDER"),
                        help="a curve family's name, then its run folders (one per endpoint pair)")
    parser.add_argument("--out", help="write the figure here (PNG)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    groups = read_groups(parser, args.group, read_run)
    table = markdown_table(rows(groups))
    print(table)
    if args.out:
        write_figure(paths_figure(groups, args.title), args.out)
        print(f"figure: {args.out}")
    return table


if __name__ == "__main__":
    main()
