"""Training memory and time per step: DEQ vs the explicit weight-tied net of equal effective depth.

For each depth L the explicit net applies the conv cell L times with backprop through all of them;
the DEQ runs exactly L forward solver iterations (tol = 0) and L backward iterations of the
implicit hook. Each configuration runs in a fresh process so its peak memory is its own:
on CPU the peak is the growth of the resident-set high-water mark during the training steps,
on CUDA `torch.cuda.max_memory_allocated`. Time per step is the median wall and process-CPU
time of the timed steps (CPU time is the steadier figure on a shared machine). Bytes saved for
backward are counted exactly with `torch.autograd.graph.saved_tensors_hooks`.

    OMP_NUM_THREADS=1 python -m benchmarks.deq_memory --depths 6 12 24 --steps 3 --figure deq_memory.png
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys


def build(kind: str, depth: int, args):
    from lit_papers.deq import DEQNet
    from lit_papers.models import build_model

    shape = (1, 28, 28)
    common = dict(cell="conv", width=args.width, downsample=args.downsample)
    if kind == "explicit":
        return build_model("weight_tied", shape, 10, depth=depth, **common)
    return DEQNet(shape, 10, solver=args.solver, max_iter=depth, tol=0.0, backward_solver=args.solver,
                  backward_max_iter=depth, backward_tol=0.0, **common)


def saved_bytes(net, x) -> int:
    import torch

    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return total[0]


def measure(kind: str, depth: int, args, queue) -> None:
    """Run in a child process: time `args.steps` training steps and record the peak memory."""
    import torch
    from benchmarks.training_child import synthetic_step, timed

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = build(kind, depth, args)
    step, x = synthetic_step(net, args, "adam")
    saved = saved_bytes(net, x)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    times, cpu_times = timed(step, args.steps + 1, device)  # the first step is a warm-up
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put({"kind": kind, "depth": depth, "saved_mib": saved / 2**20, "peak_mib": (peak - base) / 2**20,
               "step_ms": 1e3 * statistics.median(times[1:]),
               "step_cpu_ms": 1e3 * statistics.median(cpu_times[1:])})


def plot(rows: list[dict], path: str) -> None:
    """Saved-for-backward bytes, peak growth and CPU time per step against depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind, style, label in (("explicit", "C0o-", "explicit weight-tied net"), ("deq", "C1s-", "DEQ")):
        sel = [r for r in rows if r["kind"] == kind]
        depths = [r["depth"] for r in sel]
        ax_mem.plot(depths, [r["saved_mib"] for r in sel], style, label=f"{label}: saved for backward")
        ax_mem.plot(depths, [r["peak_mib"] for r in sel], style, alpha=0.4, label=f"{label}: peak growth")
        ax_time.plot(depths, [r["step_cpu_ms"] for r in sel], style, label=label)
    ax_mem.set(xlabel="effective depth (cell calls / solver iterations)", ylabel="MiB")
    ax_time.set(xlabel="effective depth", ylabel="CPU ms per training step")
    for ax in (ax_mem, ax_time):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[6, 12, 24])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--downsample", type=int, default=1, help="stride-2 stem stages (1: 14x14 states)")
    parser.add_argument("--solver", default="anderson", help="DEQ forward and backward solver")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--figure", default=None, help="save the memory/time plot here (PNG)")
    parser.add_argument("--replot", default=None, help="only plot the rows of this JSON file")
    args = parser.parse_args(argv)
    if args.replot:
        with open(args.replot) as fh:
            rows = json.load(fh)["rows"]
        plot(rows, args.figure or "deq_memory.png")
        return rows
    ctx = mp.get_context("spawn")  # a fresh process per row: clean peak-memory high-water marks
    rows = []
    for depth in args.depths:
        for kind in ("explicit", "deq"):
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(kind, depth, args, queue))
            proc.start()
            row = queue.get()
            proc.join()
            rows.append(row)
            print(f"{kind:8s} depth {depth:3d}: peak +{row['peak_mib']:7.1f} MiB, saved for backward "
                  f"{row['saved_mib']:7.1f} MiB, {row['step_ms']:7.1f} ms/step "
                  f"({row['step_cpu_ms']:7.1f} ms CPU)", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "python": sys.version.split()[0]}, fh, indent=1)
    if args.figure:
        plot(rows, args.figure)
    return rows


if __name__ == "__main__":
    main()
