"""Choosing trials: W&B's sweep engine (grid, random, bayes) proposes the next one from the trials so far."""

from __future__ import annotations

import random
import warnings

import numpy as np

from lit_papers.errors import UsageError
from lit_papers.sweeps.sweep_file import engine, plain

DRY_RUN_PLAN = 3  # trials a dry run of an open-ended (random/bayes) sweep plans without --count


def _engine_runs(trials: list[dict], metric: str | None):
    sweeps = engine()
    runs = []
    for t in trials:
        state = {"finished": sweeps.RunState.finished, "failed": sweeps.RunState.failed}.get(
            t["status"], sweeps.RunState.running)
        summary = {}
        if metric and t.get("metrics", {}).get(metric) is not None:
            summary[metric] = t["metrics"][metric]
        runs.append(sweeps.SweepRun(name=t["name"], state=state, summary_metrics=summary,
                                    config={k: {"value": v} for k, v in t["params"].items()}))
    return runs


def propose(cfg: dict, trials: list[dict], seed: int) -> dict | None:
    """The next trial's parameters from the sweep engine, or None when a grid is exhausted.

    Trials still running count as running runs: a grid never proposes their point again, and a
    bayes sweep proposes from the finished ones' metrics only."""
    sweeps = engine()
    # Seeded per trial index so a dry run and the real run propose the same random trials.
    random.seed(seed + len(trials))
    np.random.seed(seed + len(trials))
    engine_cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    metric = (cfg.get("metric") or {}).get("name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GP fit warnings of the bayes engine on few points
        run = sweeps.next_run(engine_cfg, _engine_runs(trials, metric), validate=False)
    if run is None:
        return None
    return {k: plain(v["value"]) for k, v in sorted(run.config.items())}


def total_trials(cfg: dict, count: int | None) -> int | None:
    """How many trials the sweep has: --count, else the whole grid (None = until the grid is exhausted)."""
    if count is not None:
        return count
    if cfg.get("_needs_count"):
        raise UsageError(f"a {cfg['method']} sweep has no end: pass --count N (the number of trials)")
    return None


def planned_total(cfg: dict, count: int | None, jobs: int) -> int | None:
    """What a dry run plans: --count, the whole grid, or for random/bayes without --count the first
    trials a real run would start before any result is in (at least DRY_RUN_PLAN)."""
    if count is not None or not cfg.get("_needs_count"):
        return count
    return max(jobs, DRY_RUN_PLAN)
