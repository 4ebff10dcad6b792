"""Benchmark suite: the project's training throughput next to plain PyTorch, same process, same data.

    OMP_NUM_THREADS=1 python -m benchmarks.suite --small      # CPU, seconds to minutes
    python -m benchmarks.suite                                # GPU, full MNIST-size epochs

For each workload both sides train LeNet-300-100 (Adam, batch 60) over the same device-resident
tensors; the figure is the fastest epoch after the first (warm-up, capture). Results go to
`benchmarks/results/<device>.json` and `.md`; ratios are project time / plain time (<= 1.15 is
the target for "same method") or speed-ups over the plain eager loop.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from benchmarks.output import RESULTS, device_name
from benchmarks.workloads import ORDER, WORKLOADS, Setup


def markdown(report: dict) -> str:
    lines = [f"# Benchmarks on {report['device_name']}", "",
             f"torch {report['torch']}, lightning {report['lightning']}, {report['when']}, "
             f"command: `{report['command']}`", "",
             f"Data: {report['samples']} MNIST-shaped samples (synthetic, on the device). LeNet rows: "
             "LeNet-300-100, Adam, batch 60; the ODE-Net and DEQ rows train on a subset at their own batch size. "
             f"Times: fastest epoch after the first, best of {report['repeat']} alternating round(s).", "",
             "| workload | project | plain PyTorch | figure | target | met |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in report["workloads"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | |")
            continue
        for row in r["rows"]:
            met = "" if row.get("met") is None else ("yes" if row["met"] else "**no**")
            lines.append(f"| {name}: {row['what']} | {row['project']} | {row['plain']} | {row['figure']} "
                         f"| {row.get('target', '')} | {met} |")
    notes = [f"- {name}: {r['note']}" for name, r in report["workloads"].items() if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU-sized data (3,000 samples)")
    ap.add_argument("--samples", type=int, default=None, help="training samples (default 60,000; 3,000 small)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement (the first is warm-up)")
    ap.add_argument("--members", type=int, default=None, help="population size (default 16; 4 small)")
    ap.add_argument("--steps-per-call", type=int, default=50, help="optimizer steps per training_step")
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds of plain/project (min kept)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(WORKLOADS.names())}")
    ap.add_argument("--out", default=None, help="results name (default: the device name)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    samples = args.samples or (3000 if args.small else 60000)
    torch.manual_seed(0)
    x = torch.randn(samples, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (samples,), device=device)
    setup = Setup(x=x, y=y, batch=60, epochs=args.epochs, members=args.members or (4 if args.small else 16),
                  steps_per_call=args.steps_per_call, workdir=Path(tempfile.mkdtemp(prefix="bench_")),
                  repeat=args.repeat)
    import lightning

    report = {"device_name": device_name(device), "device": device.type, "torch": torch.__version__,
              "lightning": lightning.__version__, "python": platform.python_version(),
              "threads": torch.get_num_threads(), "samples": samples, "repeat": args.repeat,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.suite " + " ".join(argv if argv is not None else sys.argv[1:]),
              "workloads": {}}
    wanted = [w for w in args.only.split(",") if w] or list(ORDER)
    for name in wanted:
        fn = WORKLOADS.get(name)
        t0 = time.perf_counter()
        try:
            result = fn(setup)
        except Exception as err:  # one failing workload must not cost the others' figures
            traceback.print_exc()
            result = {"error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        report["workloads"][name] = result
        print(name, json.dumps(result), flush=True)
        write(report, args.out or report["device_name"])  # after each workload: a timeout keeps the rest
    print(markdown(report))
    return report


def write(report: dict, stem: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
