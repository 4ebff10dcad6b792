"""`python -m lit_papers sweep sweeps/X.yaml`: a W&B sweep file run on one machine, no server.

Trials are chosen by W&B's own sweep engine (the `sweeps` package: grid, random, bayes), and
each trial runs the command line a `wandb agent` would build from the same file, as a
subprocess, into `<run_root>/<sweep>/trial_NNN/`. `--jobs N` runs N trials at once, each with
`cores // N` threads. The state of the sweep lives in `<run_root>/<sweep>/sweep_state.json`:
running the same command again skips finished trials, resumes interrupted ones from their
`last.ckpt`, and proposes new ones until `--count` (or the end of the grid).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from lit_papers.errors import UsageError
from lit_papers.sweeps.proposals import planned_total, propose, total_trials
from lit_papers.sweeps.report import report
from lit_papers.sweeps.state import load_state, lock, new_state, save_state
from lit_papers.sweeps.sweep_file import agent_command, load_sweep
from lit_papers.sweeps.trial import (Running, adopt_finished, available_cores, finish, first_trial_check,
                                     placement, start, stop, thread_budget)

EXIT_USAGE = 2
POLL_S = 0.2  # how often the runner looks for an ended trial


def _new_trial(trials: list[dict], params: dict, status: str) -> dict:
    return {"name": f"trial_{len(trials):03d}", "params": params, "status": status}


def plan(cfg: dict, folder: Path, name: str, trials: list[dict], wanted: int | None, seed: int,
         threads: int, extra: list[str]) -> list[dict]:
    """Print the trials' command lines (the recorded ones, then the engine's next proposals, each with
    the flags given after `--`); run nothing."""
    planned = list(trials)
    while wanted is None or len(planned) < wanted:
        params = propose(cfg, planned, seed)
        if params is None:
            break
        planned.append(_new_trial(planned, params, "planned"))
    for t in planned:
        argv = agent_command(cfg, t["params"]) + placement(cfg, folder, name, t.get("version") or t["name"]) + extra
        print(f"{t['name']} [{t['status']}]: OMP_NUM_THREADS={threads} {shlex.join(argv)}")
    if cfg.get("_needs_count") and cfg["method"] == "bayes" and len(planned) > 1:
        print(f"[sweep] bayes: these are the first {len(planned)} trials as started before any result is in; "
              "later proposals depend on the results", file=sys.stderr)
    return planned


def schedule(cfg: dict, folder: Path, name: str, state: dict, wanted: int | None, seed: int,
             extra: list[str], jobs: int, threads: int) -> None:
    """Run the sweep with up to `jobs` trials at once; the state is saved after every change."""
    trials = state["trials"]
    # Unfinished trials of an earlier invocation first, with their parameters and folders.
    todo = [t for t in trials if t["status"] != "finished" and not adopt_finished(folder, t)]
    save_state(folder, state)
    running: list[Running] = []
    exhausted = False
    try:
        while True:
            while len(running) < jobs:
                if todo:
                    trial = todo.pop(0)
                elif not exhausted and (wanted is None or len(trials) < wanted):
                    params = propose(cfg, trials, seed)  # running trials count: never proposed twice
                    if params is None:
                        exhausted = True
                        continue
                    trial = _new_trial(trials, params, "pending")
                    trials.append(trial)
                else:
                    break
                running.append(start(folder, name, cfg, trial, extra, threads))
                save_state(folder, state)
            if not running:
                return
            ended = [r for r in running if r.proc.poll() is not None]
            if not ended:
                time.sleep(POLL_S)
                continue
            for r in ended:
                finish(folder, r)
                running.remove(r)
            save_state(folder, state)
    finally:
        if running:  # Ctrl-C, SIGTERM or an error in the runner: the trials save and stop
            print(f"[sweep] stopping {len(running)} running trial(s); rerun the same command to resume",
                  file=sys.stderr)
            stop(folder, running)
            save_state(folder, state)


def run_sweep(sweep_file: Path, count: int | None, dry_run: bool, run_root: Path, name: str | None,
              seed: int, extra: list[str], jobs: int = 1, threads: int | None = None) -> list[dict]:
    """Run (or with dry_run only print) the sweep; return the trial records."""
    cfg = load_sweep(sweep_file)
    name = name or sweep_file.stem
    folder = run_root / name
    state = load_state(folder, cfg, sweep_file) if folder.exists() else new_state(cfg, sweep_file)
    cores = available_cores()
    threads = threads or thread_budget(jobs, cores)
    if dry_run:
        return plan(cfg, folder, name, state["trials"], planned_total(cfg, count, jobs), seed, threads, extra)
    wanted = total_trials(cfg, count)
    if not state["trials"]:
        params = propose(cfg, [], seed)
        if params is None:
            raise UsageError(f"{sweep_file}: the sweep engine proposed no trial")
        first_trial_check(cfg, params, threads)
    folder.mkdir(parents=True, exist_ok=True)
    with lock(folder):
        state = load_state(folder, cfg, sweep_file)  # reread under the lock: another runner may have ended
        print(f"[sweep] {name}: up to {jobs} trial(s) at once, {threads} thread(s) each ({cores} cores)",
              flush=True)
        schedule(cfg, folder, name, state, wanted, seed, extra, jobs, threads)
    return state["trials"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lit_papers sweep",
                                description="Run a W&B sweep file offline, N trials at once, resumably. "
                                            "Arguments after `--` go to every trial.")
    p.add_argument("sweep_file", type=Path, help="a sweep file, e.g. sweeps/lottery.yaml")
    p.add_argument("--count", type=_positive, default=None,
                   help="total number of trials (default: the whole grid; required for random/bayes)")
    p.add_argument("--jobs", type=_positive, default=1, help="trials run at once (default 1)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="threads per trial (default: the cores this process may use // --jobs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials' command lines (random/bayes without --count: the first ones), run nothing")
    p.add_argument("--run_root", type=Path, default=Path("runs"), help="trials go to <run_root>/<name>/")
    p.add_argument("--name", default=None, help="sweep folder name (default: the sweep file's stem)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random/bayes proposals")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Entry point of `python -m lit_papers sweep`. Usage errors exit 2, failed trials exit 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = _parser().parse_args(argv)  # argparse exits 2 on a bad option
    try:
        trials = run_sweep(args.sweep_file, args.count, args.dry_run, args.run_root, args.name,
                           args.seed, extra, jobs=args.jobs, threads=args.threads)
        if not args.dry_run:
            report(args.run_root / (args.name or args.sweep_file.stem), load_sweep(args.sweep_file), trials)
    except UsageError as err:
        _fail(" ".join(str(err).split()))
    failed = [t["name"] for t in trials if t["status"] in ("failed", "interrupted")]
    if failed:
        print(f"[sweep] {len(failed)} trial(s) did not finish: {', '.join(failed)}; rerun the same command "
              f"to retry", file=sys.stderr)
        raise SystemExit(1)
    return trials


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
