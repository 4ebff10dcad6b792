"""What an offline sweep ends with: a table of the trials' summary metrics, a CSV, and a figure.

The figure is the paper's own when its LightningModule defines the classmethod
`sweep_figure(trials) -> matplotlib Figure | None` (each trial a dict with `params`, `metrics`,
`summary` and `folder`); otherwise the sweep metric against the first swept parameter that is not
a seed, one line per combination of the other parameters, mean ± std over seeds.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
from collections import defaultdict
from pathlib import Path

import yaml

SEED_KEYS = ("seed_everything", "seed")


def trial_metrics(summary: dict) -> dict[str, float]:
    """The final metrics of a run's summary.json (what W&B shows as the run summary), plus wall time."""
    metrics = {k: v for k, v in (summary.get("final") or {}).items() if isinstance(v, (int, float))}
    if isinstance(summary.get("wall_time_s"), (int, float)):
        metrics["wall_time_s"] = summary["wall_time_s"]
    return metrics


def _short(key: str) -> str:
    return key.replace(".init_args.", ".").replace("model.", "").replace("data.", "data.")


def _columns(trials: list[dict], metric: str | None) -> tuple[list[str], list[str]]:
    params = sorted({k for t in trials for k in t["params"]})
    keys = sorted({k for t in trials for k in t.get("metrics", {}) if k.startswith("test/")})[:4]
    if metric and metric not in keys:
        keys.insert(0, metric)
    return params, keys + ["wall_time_s"]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(trials: list[dict], metric: str | None) -> None:
    """A fixed-width table: one row per trial, swept parameters then metrics."""
    params, keys = _columns(trials, metric)
    header = ["trial", "status", *map(_short, params), *keys]
    rows = [[t["name"], t["status"], *(_fmt(t["params"].get(p)) for p in params),
             *(_fmt(t.get("metrics", {}).get(k)) for k in keys)] for t in trials]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))


def write_csv(path: Path, trials: list[dict]) -> None:
    params = sorted({k for t in trials for k in t["params"]})
    metrics = sorted({k for t in trials for k in t.get("metrics", {})})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "status", "folder", *params, *metrics])
        for t in trials:
            writer.writerow([t["name"], t["status"], t.get("version", ""),
                             *(t["params"].get(p, "") for p in params),
                             *(t.get("metrics", {}).get(m, "") for m in metrics)])


def _module_class(run: Path):
    """The LightningModule class a trial ran, read from its saved config.yaml."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
        module_path, _, name = config["model"]["class_path"].rpartition(".")
        return getattr(importlib.import_module(module_path), name)
    except (OSError, KeyError, TypeError, AttributeError, ImportError, yaml.YAMLError):
        return None


def aggregate_figure(folder: Path, trials: list[dict], metric: str | None) -> Path | None:
    """Write `<sweep folder>/sweep_figure.png`; the module's own `sweep_figure` hook wins."""
    done = [t for t in trials if t["status"] == "finished"]
    if not done:
        return None
    records = []
    for t in done:
        run = folder / t.get("version", t["name"])
        try:
            summary = json.loads((run / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            summary = {}
        records.append({**t, "summary": summary, "folder": run})
    cls = _module_class(records[0]["folder"])
    hook = getattr(cls, "sweep_figure", None)
    fig = hook(records) if callable(hook) else generic_figure(records, metric)
    if fig is None:
        return None
    path = folder / "sweep_figure.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def generic_figure(records: list[dict], metric: str | None):
    """Metric vs the first non-seed parameter; one line per other setting; mean ± std over seeds."""
    if not metric:
        return None
    swept = [k for k in sorted({k for r in records for k in r["params"]})
             if k not in SEED_KEYS and len({json.dumps(r["params"].get(k)) for r in records}) > 1]
    if not swept:
        swept = [k for k in sorted(records[0]["params"]) if k not in SEED_KEYS][:1]
    if not swept:
        return None
    x_key, group_keys = swept[0], swept[1:]
    groups: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for r in records:
        value = r.get("metrics", {}).get(metric)
        if value is None or not math.isfinite(value):
            continue
        group = tuple((k, r["params"].get(k)) for k in group_keys)
        groups[group][r["params"].get(x_key)].append(value)
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(x, (int, float)) for g in groups.values() for x in g)
    for group, by_x in sorted(groups.items(), key=lambda kv: str(kv[0])):
        xs = sorted(by_x, key=lambda x: x if numeric else str(x))
        means = [sum(by_x[x]) / len(by_x[x]) for x in xs]
        stds = [_std(by_x[x]) for x in xs]
        label = ", ".join(f"{_short(k)}={v}" for k, v in group) or metric
        pos = xs if numeric else list(range(len(xs)))
        ax.errorbar(pos, means, yerr=stds, marker="o", capsize=3, label=label)
        if not numeric:
            ax.set_xticks(pos, [str(x) for x in xs])
    ax.set_xlabel(_short(x_key))
    ax.set_ylabel(metric)
    seeds = max(len(v) for g in groups.values() for v in g.values())
    ax.set_title(f"{metric} over the sweep (mean ± std over up to {seeds} run(s) per point)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
