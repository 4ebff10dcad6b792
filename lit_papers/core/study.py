"""A study: named arms (CLI argument sets) x seeds, each one ordinary `fit` run, all in one process.

    python -m lit_papers.core.study --run_root runs/table1 --seeds 0 1 2 \\
        --arm resnet "--config configs/neural_ode_table1.yaml --model.variant=resnet" \\
        --arm odenet "--config configs/neural_ode_table1.yaml --model.variant=odenet"

Every (arm, seed) is `python -m lit_papers fit <arm args> --seed_everything=<seed>` into
`<run_root>/<arm>_s<seed>/v0/` (experiment `<arm>_s<seed>`, version `v0`): the same run folder,
summary and checkpoints as a fit launched by hand. The runs share one Python process, so the
interpreter and library start-up (tens of seconds on a loaded CPU) is paid once, not once per run.
A run whose `summary.json` says finished is skipped, so an interrupted study continues where it
stopped; an unfinished one resumes from its `last.ckpt`. Runs are sequential; arms run in the
order given, all seeds of an arm before the next arm. `--dry-run` prints the runs' command lines.

The studies' reports read the folders back with `read_run` (config, summary, metrics.csv rows)
and tabulate seeds with `mean_sd` / `seed_cell`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VERSION = "v0"


@dataclass(frozen=True)
class StudyRun:
    """One fit of a study: its arm, its seed and the CLI arguments that make it."""

    arm: str
    seed: int
    args: tuple[str, ...]
    run_root: Path

    @property
    def experiment(self) -> str:
        return f"{self.arm}_s{self.seed}"

    @property
    def folder(self) -> Path:
        return self.run_root / self.experiment / VERSION

    def finished(self) -> bool:
        summary = self.folder / "summary.json"
        try:
            return json.loads(summary.read_text()).get("status") == "finished"
        except (OSError, ValueError):
            return False

    def argv(self) -> list[str]:
        """The `lit_papers fit` arguments of this run (resuming its own last.ckpt if it has one)."""
        out = ["fit", *self.args, f"--seed_everything={self.seed}", f"--run_root={self.run_root}",
               f"--experiment={self.experiment}", f"--run_version={VERSION}"]
        if (self.folder / "checkpoints" / "last.ckpt").is_file():
            out.append(f"--ckpt_path={self.folder / 'checkpoints' / 'last.ckpt'}")
        return out


def plan(arms: Sequence[tuple[str, str]], seeds: Sequence[int], run_root: Path) -> list[StudyRun]:
    """The study's runs, arm by arm. Arm names must be unique and usable as folder names."""
    if not arms:
        raise ValueError("a study needs at least one --arm NAME ARGS")
    if not seeds:
        raise ValueError("a study needs at least one seed (--seeds 0 1 2)")
    names = [name for name, _ in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    for name in names:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"arm name {name!r} is not a folder name")
    return [StudyRun(name, int(seed), tuple(shlex.split(args)), run_root) for name, args in arms for seed in seeds]


def run_study(runs: Sequence[StudyRun]) -> list[dict]:
    """Fit every unfinished run in this process; returns one record per run (arm, seed, folder, status, wall_s)."""
    from lit_papers.cli import main
    from lit_papers.core.run_folder import RUN_DIR_ENV, VERSION_ENV

    records = []
    for run in runs:
        if run.finished():
            print(f"[study] {run.experiment}: finished before, skipped ({run.folder})", flush=True)
            records.append({"arm": run.arm, "seed": run.seed, "folder": str(run.folder), "status": "skipped",
                            "wall_s": 0.0})
            continue
        for key in (VERSION_ENV, RUN_DIR_ENV):  # set by the previous run's folder claim
            os.environ.pop(key, None)
        print(f"[study] {run.experiment}: {shlex.join(run.argv())}", flush=True)
        start = time.perf_counter()
        try:
            main(run.argv())
        except SystemExit as err:
            if err.code not in (0, None):
                raise RuntimeError(f"study run {run.experiment} failed (exit {err.code}); its folder: "
                                   f"{run.folder}. Rerun the study to retry it.") from None
        wall = time.perf_counter() - start
        if not run.finished():
            raise RuntimeError(f"study run {run.experiment} ended without a finished summary.json in {run.folder}")
        records.append({"arm": run.arm, "seed": run.seed, "folder": str(run.folder), "status": "finished",
                        "wall_s": round(wall, 1)})
    return records


def read_run(folder: str | Path) -> dict:
    """A finished run folder: {folder, config (config.yaml), summary (summary.json), metrics (metrics.csv rows)}."""
    import yaml

    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise ValueError(f"{folder} is not a run folder (no summary.json); give <run_root>/<experiment>/<version>")
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "finished":
        raise ValueError(f"{folder}: the run did not finish (status {summary.get('status')!r}); rerun the study")
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    metrics = []
    if (folder / "metrics.csv").is_file():
        with open(folder / "metrics.csv", newline="") as fh:
            metrics = list(csv.DictReader(fh))
    return {"folder": folder, "config": config, "summary": summary, "metrics": metrics}


def metric_values(run: dict, key: str) -> list[float]:
    """Every logged value of `key` in the run's metrics.csv, in order."""
    out = []
    for row in run["metrics"]:
        value = row.get(key)
        if value not in (None, ""):
            out.append(float(value))
    return out


def init_args(run: dict, section: str = "model") -> dict:
    """The run's `model` (or `data`) arguments as recorded in its config.yaml."""
    block = run["config"].get(section) or {}
    return block.get("init_args", block)


def read_groups(parser: argparse.ArgumentParser, groups: Sequence[Sequence[str]], read) -> dict[str, list]:
    """{name: [read(folder), ...]} of `--group NAME FOLDER...` arguments; a group without folders or a
    folder `read` refuses (ValueError) is a usage error of `parser`."""
    out = {}
    for name, *folders in groups:
        if not folders:
            parser.error(f"--group {name} names no run folders")
        try:
            out[name] = [read(f) for f in folders]
        except ValueError as err:
            parser.error(str(err))
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; nan for none)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def seed_cell(values: Sequence[float], scale: float = 1.0, digits: int = 2, unit: str = "",
              seed_digits: int | None = None) -> str:
    """`mean ± sd unit (seed values)` of `values` times `scale`."""
    m, sd = mean_sd([scale * v for v in values])
    seeds = ", ".join(f"{scale * v:.{digits if seed_digits is None else seed_digits}f}" for v in values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}{unit} ({seeds})"


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--arm", nargs=2, action="append", required=True, metavar=("NAME", "ARGS"),
                        help="an arm's name and its fit arguments as one quoted string")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run_root", type=Path, default=Path("runs/study"))
    parser.add_argument("--dry-run", action="store_true", help="print the runs' command lines, run nothing")
    args = parser.parse_args(argv)
    try:
        runs = plan(args.arm, args.seeds, args.run_root)
    except ValueError as err:
        parser.error(str(err))
    if args.dry_run:
        for run in runs:
            state = "finished" if run.finished() else "to run"
            print(f"{run.experiment} [{state}]: python -m lit_papers {shlex.join(run.argv())}")
        return []
    start = time.perf_counter()
    records = run_study(runs)
    total = time.perf_counter() - start
    args.run_root.mkdir(parents=True, exist_ok=True)
    (args.run_root / "study.json").write_text(json.dumps(
        {"argv": sys.argv if argv is None else list(argv), "wall_s": round(total, 1), "runs": records}, indent=1))
    print(f"[study] {len(records)} runs in {total:.0f} s ({args.run_root / 'study.json'})", flush=True)
    return records


if __name__ == "__main__":
    main()
