"""What an offline sweep ends with: a table of the trials' summary metrics, a CSV, and a figure.

Parameters are the values each trial ran with, read from its run folder's config.yaml: a flag
given after `--` (`-- --model.init_args.rounds=1`) overrides the sweep file's value in every
trial, and the table, CSV and figure show what ran, with a line naming the overridden keys.
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
_MISSING = object()


def report(folder: Path, cfg: dict, trials: list[dict]) -> None:
    """The table of trials' summary metrics, sweep_results.csv, and the aggregate figure."""
    metric = (cfg.get("metric") or {}).get("name")
    records = ran_records(folder, trials)
    print_table(records, metric)
    for line in override_notes(records):
        print(f"[sweep] {line}")
    write_csv(folder / "sweep_results.csv", records)
    figure = aggregate_figure(folder, records, metric)
    if figure is not None:
        print(f"[sweep] figure: {figure}")


def ran_values(run: Path, params: dict) -> dict:
    """The swept keys' values a trial ran with, from `<run>/config.yaml` (dotted keys as LightningCLI
    nests them; a key from before the settings groups, `model.init_args.lr`, is read at its new place,
    `model.init_args.optim.lr`); the sweep's value for a key the config does not hold or a run that
    wrote no config."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        config = None
    out = {}
    for key, value in params.items():
        node = _lookup(config, key)
        if node is _MISSING:
            from lit_papers.core import renamed_keys  # here: lit_papers.core imports torch, the report need not

            moved = renamed_keys.rewrite_flags([f"--{key}"], notice=lambda *_, **__: None)[0][2:]
            node = _lookup(config, moved) if moved != key else _MISSING
        out[key] = value if node is _MISSING else node
    return out


def _lookup(config, key: str):
    node = config
    for part in key.split("."):
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING:
            break
    return node


def ran_records(folder: Path, trials: list[dict]) -> list[dict]:
    """Each trial with `params` = the values it ran, `proposed` = the sweep's, and its `folder`."""
    records = []
    for t in trials:
        run = folder / t.get("version", t["name"])
        records.append({**t, "proposed": t["params"], "params": ran_values(run, t["params"]), "folder": run})
    return records


def override_notes(records: list[dict]) -> list[str]:
    """One line per swept key whose ran value differs from the sweep's in some trial."""
    notes = []
    for key in sorted({k for r in records for k in r["params"]}):
        changed = [r for r in records if key in r["proposed"] and r["params"][key] != r["proposed"][key]]
        if changed:
            ran = sorted({_fmt(r["params"][key]) for r in changed})
            proposed = sorted({_fmt(r["proposed"][key]) for r in changed})
            notes.append(f"{key}: {len(changed)} trial(s) ran {', '.join(ran)} where the sweep file says "
                         f"{', '.join(proposed)} (set after `--`); the table shows the values that ran")
    return notes


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
    """A fixed-width table: one row per trial, swept parameters (the values that ran) then metrics."""
    params, keys = _columns(trials, metric)
    header = ["trial", "status", *map(_short, params), *keys]
    rows = [[t["name"], t["status"], *(_fmt(t["params"].get(p)) for p in params),
             *(_fmt(t.get("metrics", {}).get(k)) for k in keys)] for t in trials]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))


def write_csv(path: Path, trials: list[dict]) -> None:
    """One row per trial: name, status, run folder, parameters, every final metric."""
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
        run = t.get("folder") or folder / t.get("version", t["name"])
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
