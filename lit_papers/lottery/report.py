"""Read lottery run folders and plot accuracy / early-stopping iteration vs % weights remaining.

    python -m lit_papers.lottery.report --group ticket runs/lottery/version_{0,1,2} \\
        --group reinit runs/lottery_reinit/version_{0,1,2} --out docs/figures/lottery_mnist5k.png

    python -m lit_papers.lottery.report --study runs/lottery_study/version_0 --out study.png

Every run folder holds ``lottery.json`` (one row per level, written by LotteryTicketModule);
older folders without it are read from the ``lottery/*`` columns of ``metrics.csv``. Runs of a
group are seeds: levels are matched by index and shown as mean +- std. A study folder
(LotteryPopulationModule) holds ``lottery_population.json``: its members are grouped by control.
A second table pairs every run with its own dense level 0 (the same seed's theta_0): the
difference in test accuracy at early stop, the ratio of early-stopping iterations, and how many
runs are above their dense net.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"ticket": "tab:blue", "reinit": "tab:orange", "random_prune": "tab:green"}


def read_run(folder: str | Path) -> list[dict]:
    """The per-level rows of one run folder."""
    folder = Path(folder)
    if (folder / "lottery.json").is_file():
        return json.loads((folder / "lottery.json").read_text())["levels"]
    path = folder / "metrics.csv"
    if not path.is_file():
        raise ValueError(f"{folder} is not a lottery run folder (no lottery.json or metrics.csv)")
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lottery/es_test_acc")]
    return [{k.removeprefix("lottery/"): float(v) for k, v in r.items() if k.startswith("lottery/") and v}
            for r in rows]


def read_study(folder: str | Path) -> dict[str, list[list[dict]]]:
    """control -> the per-level rows of its seeds, from a LotteryPopulationModule run folder."""
    path = Path(folder) / "lottery_population.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a lottery study folder (no lottery_population.json)")
    groups: dict[str, list[list[dict]]] = {}
    for member in json.loads(path.read_text())["members"]:
        if member["levels"]:
            groups.setdefault(member["control"], []).append(member["levels"])
    return groups


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return m, math.sqrt(var)


def aggregate(histories: list[list[dict]], key: str) -> list[tuple[float, float, float]]:
    """(% remaining, mean, std) of ``key`` per level, over the runs (levels all runs reached)."""
    levels = min(len(h) for h in histories)
    out = []
    for lvl in range(levels):
        x = sum(h[lvl]["percent_remaining"] for h in histories) / len(histories)
        out.append((x, *mean_std([h[lvl][key] for h in histories])))
    return out


def rounds_figure(groups: dict[str, list[list[dict]]], title: str = ""):
    """Two panels vs % weights remaining (log x, decreasing): test accuracy at early stop and
    the early-stopping iteration; one line per group with a mean +- std band."""
    fig, (ax_acc, ax_it) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    ticks: list[float] = []
    for label, histories in groups.items():
        color = COLORS.get(label.split(" ")[0]) if " p=" not in label else None
        for ax, key, scale in ((ax_acc, "es_test_acc", 100.0), (ax_it, "es_iteration", 1.0)):
            rows = aggregate(histories, key)
            xs = [r[0] for r in rows]
            ticks = xs if len(xs) > len(ticks) else ticks
            ms = [r[1] * scale for r in rows]
            ss = [r[2] * scale for r in rows]
            ax.plot(xs, ms, marker="o", markersize=3, color=color, label=f"{label} (n={len(histories)})")
            ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)],
                            color=color, alpha=0.2)
    first = next(iter(groups.values()), None)
    if first and all(h and h[0]["percent_remaining"] == 100.0 for h in first):  # the dense net, level 0
        for ax, key, scale in ((ax_acc, "es_test_acc", 100.0), (ax_it, "es_iteration", 1.0)):
            ax.axhline(scale * mean_std([h[0][key] for h in first])[0], color="grey", ls=":", lw=1,
                       label="dense (level 0)")
    for ax, ylabel in ((ax_acc, "test accuracy at early stop (%)"), (ax_it, "early-stop iteration")):
        ax.set_xscale("log")
        # the levels' densities, not powers of 10; upright labels would overlap beyond ~10 levels
        ax.set_xticks(ticks, [f"{x:.3g}" for x in ticks], rotation=90 if len(ticks) > 10 else 0)
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel("% of weights remaining")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def sweep_figure(trials: list[dict]):
    """The rounds figure of a sweep's finished trials, grouped by control (and pruning rate when
    the sweep varies it), each group averaged over its seeds."""
    rates = {t["params"]["model.init_args.prune_rate"] for t in trials if "model.init_args.prune_rate" in t["params"]}
    groups: dict[str, list[list[dict]]] = {}
    for t in trials:
        label = str(t["params"].get("model.init_args.control", "ticket"))
        if len(rates) > 1:
            label += f" p={t['params'].get('model.init_args.prune_rate')}"
        try:
            groups.setdefault(label, []).append(read_run(t["folder"]))
        except ValueError:
            continue  # a trial without lottery rows (failed early) does not enter the figure
    groups = {k: v for k, v in sorted(groups.items()) if v}
    return rounds_figure(groups, title="IMP sweep: mean ± std over seeds") if groups else None


def markdown_table(groups: dict[str, list[list[dict]]]) -> str:
    """A table: % remaining, then per group test acc at early stop and early-stop iteration."""
    labels = list(groups)
    head = "| % remaining | " + " | ".join(f"{g} test acc (%) | {g} early-stop it." for g in labels) + " |"
    lines = [head, "|" + " --- |" * (1 + 2 * len(labels))]
    stats = {g: (aggregate(h, "es_test_acc"), aggregate(h, "es_iteration")) for g, h in groups.items()}
    for lvl in range(min(len(a) for a, _ in stats.values())):
        cells = [f"{stats[labels[0]][0][lvl][0]:.1f}"]
        for g in labels:
            acc, it = stats[g][0][lvl], stats[g][1][lvl]
            cells += [f"{100 * acc[1]:.2f} ± {100 * acc[2]:.2f}", f"{it[1]:.0f} ± {it[2]:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dense_gaps(histories: list[list[dict]]) -> list[dict]:
    """Per level, each run against its own dense level 0 (same seed, same theta_0): the test-accuracy
    difference at early stop (pp), the ratio of early-stopping iterations, and how many runs beat
    their dense net (mean +- std over runs, paired by run)."""
    levels = min(len(h) for h in histories)
    out = []
    for lvl in range(levels):
        diffs = [100.0 * (h[lvl]["es_test_acc"] - h[0]["es_test_acc"]) for h in histories]
        ratios = [h[lvl]["es_iteration"] / h[0]["es_iteration"] for h in histories]
        out.append({"percent_remaining": sum(h[lvl]["percent_remaining"] for h in histories) / len(histories),
                    "acc_diff": mean_std(diffs), "it_ratio": mean_std(ratios),
                    "above": sum(d > 0 for d in diffs), "runs": len(histories)})
    return out


def dense_table(groups: dict[str, list[list[dict]]]) -> str:
    """A table: % remaining, then per group its paired gap to the dense net (level 0 of the same run):
    test accuracy at early stop minus the dense one (pp), early-stop iteration / the dense one, runs above dense."""
    labels = list(groups)
    head = "| % remaining | " + " | ".join(f"{g} − dense (pp) | {g} it. / dense it. | {g} above dense"
                                         for g in labels) + " |"
    lines = [head, "|" + " --- |" * (1 + 3 * len(labels))]
    gaps = {g: dense_gaps(h) for g, h in groups.items()}
    for lvl in range(min(len(v) for v in gaps.values())):
        cells = [f"{gaps[labels[0]][lvl]['percent_remaining']:.1f}"]
        for g in labels:
            row = gaps[g][lvl]
            (d, ds), (r, rs) = row["acc_diff"], row["it_ratio"]
            cells += [f"{d:+.2f} ± {ds:.2f}", f"{r:.2f} ± {rs:.2f}", f"{row['above']}/{row['runs']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", nargs="+", action="append", default=[], metavar=("LABEL", "RUN"),
                        help="a label (ticket, reinit, random_prune, ...) followed by its run folders")
    parser.add_argument("--study", action="append", default=[], metavar="FOLDER",
                        help="a LotteryPopulationModule run folder: its members grouped by control")
    parser.add_argument("--out", default="lottery.png", help="where to write the PNG")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if not args.group and not args.study:
        parser.error("give run folders with --group LABEL RUN... or a study folder with --study FOLDER")
    groups = {}
    for folder in args.study:
        for control, histories in read_study(folder).items():
            groups.setdefault(control, []).extend(histories)
    for label, *folders in args.group:
        if not folders:
            parser.error(f"--group {label}: give at least one run folder after the label")
        groups[label] = [read_run(f) for f in folders]
    fig = rounds_figure(groups, args.title)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(markdown_table(groups))
    print()
    print(dense_table(groups))
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
