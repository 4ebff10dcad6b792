"""Figures of Zhang et al. (2017): the per-run fit curve and, across runs, Fig. 1a/1b/1c.

Across runs: `python -m lit_papers.generalization.figures RUN_FOLDER... --out docs/figures` reads
each run folder's config.yaml and metrics.csv (written by the CLI) and draws
  generalization_fig1a.png  full-train loss vs steps, one curve per corruption;
  generalization_fig1b.png  steps to fit vs label-corruption level, one curve per model;
  generalization_fig1c.png  test error vs label-corruption level, one curve per model.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402


def fit_curve_figure(history: list[dict], steps_to_fit: int | None):
    """Full-train accuracy (and per-epoch test accuracy) vs optimizer steps, with the fit step."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    steps = [r["step"] for r in history]
    ax.plot(steps, [r["train_acc"] for r in history], label="train (full split, eval mode)")
    if all("test_acc" in r for r in history):
        ax.plot(steps, [r["test_acc"] for r in history], label="test")
    if steps_to_fit is not None:
        ax.axvline(steps_to_fit, color="k", ls="--", lw=0.8, label=f"fitted at step {steps_to_fit}")
    ax.set(xlabel="optimizer steps", ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def load_run(folder: Path) -> dict:
    """Settings (arch, corruption, prob) and per-epoch/final metrics of one run folder."""
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    rows = list(csv.DictReader((folder / "metrics.csv").open()))

    def series(key):
        return [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]

    def last(key):
        values = series(key)
        return values[-1][1] if values else math.nan

    kind = data.get("corruption", "none")
    prob = {"none": 0.0, "random_labels": 1.0}.get(kind, float(data.get("corruption_prob", 1.0)))
    return {"arch": model.get("arch"), "arch_kwargs": model.get("arch_kwargs") or {}, "corruption": kind,
            "prob": prob, "corrupt_test": bool(data.get("corrupt_test", False)),
            "loss_curve": series("gen/train_loss"), "steps_to_fit": last("gen/steps_to_fit"),
            "test_acc": last("test/acc"), "train_acc": last("gen/final_train_acc")}


def _model_label(run: dict) -> str:
    hidden = run["arch_kwargs"].get("hidden")
    return f"mlp {'x'.join(map(str, hidden))}" if run["arch"] == "mlp" and hidden else str(run["arch"])


def fig1a(runs: list[dict]):
    """One full-train-loss curve per corruption (label corruptions only at p in {0, 1})."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    names = {"none": "true labels", "random_labels": "random labels", "shuffled_pixels": "shuffled pixels",
             "random_pixels": "random pixels", "gaussian_pixels": "gaussian"}
    for run in runs:
        if run["corruption"] in names and run["loss_curve"]:
            steps, loss = zip(*run["loss_curve"])
            # dashed: shuffled pixels lie almost on top of true labels for an MLP (which has no
            # notion of pixel neighbourhoods, so a fixed permutation changes nothing essential)
            style = "--" if run["corruption"] == "shuffled_pixels" else "-"
            ax.plot(steps, loss, style, label=f"{names[run['corruption']]} ({_model_label(run)})")
    ax.set(xlabel="optimizer steps", ylabel="full-train cross-entropy", yscale="log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _by_model(runs: list[dict], key: str):
    """{model label: sorted [(corruption level, mean value)]} over the label-corruption runs.

    Runs at the same level (seeds, or none / partial p=0 / random_labels / partial p=1) are averaged.
    Runs whose test labels were corrupted too are left out: Fig. 1c is about a clean test set.
    """
    table = defaultdict(lambda: defaultdict(list))
    for run in runs:
        noisy_test = run["corrupt_test"] and run["corruption"] != "none"
        if run["corruption"] in ("none", "partial_labels", "random_labels") and not noisy_test \
                and not math.isnan(run[key]):
            table[_model_label(run)][run["prob"]].append(run[key])
    return {label: sorted((p, sum(v) / len(v)) for p, v in levels.items()) for label, levels in table.items()}


def fig1b(runs: list[dict]):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, points in _by_model(runs, "steps_to_fit").items():
        ax.plot(*zip(*points), marker="o", label=label)
    ax.set(xlabel="label corruption p", ylabel="steps to 100% train accuracy")
    if ax.get_legend_handles_labels()[0]:  # a run too short to fit has no point to draw
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig1c(runs: list[dict]):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, points in _by_model(runs, "test_acc").items():
        probs, accs = zip(*points)
        ax.plot(probs, [1 - a for a in accs], marker="o", label=label)
    ax.axhline(0.9, color="k", ls=":", lw=0.8, label="chance (10 classes)")
    ax.set(xlabel="label corruption p", ylabel="test error (= generalization error at 0 train error)",
           ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or parents of run folders)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    folders = [p for root in args.runs for p in ([root] if (root / "config.yaml").exists()
                                                  else sorted(root.glob("*/")))
               if (p / "metrics.csv").exists()]
    runs = [load_run(f) for f in folders]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in (("fig1a", fig1a), ("fig1b", fig1b), ("fig1c", fig1c)):
        make(runs).savefig(args.out / f"generalization_{name}.png", dpi=120, bbox_inches="tight")
    for run in runs:
        print(f"{_model_label(run):12s} {run['corruption']:16s} p={run['prob']:.1f} "
              f"steps_to_fit={run['steps_to_fit']} train={run['train_acc']:.4f} test={run['test_acc']:.4f}")


if __name__ == "__main__":
    main()
