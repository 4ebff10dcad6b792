"""Training memory of Neural ODEs: adjoint vs backprop through the solver, and Table 1's models.

Part 1 (``--part horizon``): the ODE-Net block (ConvDynamics, 32x7x7 features) integrated with
fixed-step RK4 (step 0.25, so NFE-F = 16 T) over growing horizons T. Backprop through the solver
("direct", RK-Net) keeps every stage's activations, so its memory grows linearly with T; the
adjoint keeps only the final state and recomputes one step at a time backwards, so it stays flat.

Part 2 (``--part models``): MLP / ResNet / RK-Net / ODE-Net on 1x28x28 inputs: parameters,
memory and time of one training step.

Memory is measured three ways, each configuration in a fresh process:
- peak live activation bytes: every tensor autograd saves for backward is tracked
  (``saved_tensors_hooks``) from creation until autograd frees it, deduplicated by storage and
  excluding parameters; the peak over forward + backward is exact and device-independent;
- on CPU, the growth of the process's resident-set high-water mark (coarse, allocator-dependent);
- on CUDA, ``torch.cuda.max_memory_allocated`` during the step.

    OMP_NUM_THREADS=1 python -m benchmarks.node_memory --part horizon --horizons 1 2 4 8
    OMP_NUM_THREADS=1 python -m benchmarks.node_memory --part models
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics

from lit_papers.core.saved_tensors import LiveSavedBytes


def build(kind: str, T: float, args):
    from lit_papers.neural_ode import build_classifier

    variant = {"direct": "rknet", "adjoint": "odenet"}.get(kind, kind)
    return build_classifier(variant, (1, 28, 28), 10, channels=args.channels, depth=args.depth,
                            T=T, method="rk4", step_size=0.25)


def measure(kind: str, T: float, args, queue) -> None:
    """Child process: time ``args.steps`` training steps, then one metered step."""
    import torch
    from benchmarks.training_child import synthetic_step, timed

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = build(kind, T, args)
    step, _ = synthetic_step(net, args, "sgd")
    step()  # warm-up: allocator pools and lazy inits
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, _ = timed(step, args.steps, device)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    meter = LiveSavedBytes({p.untyped_storage().data_ptr() for p in net.parameters()})
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        step()
    block = getattr(net, "ode_block", None)
    queue.put({
        "model": kind, "T": T, "params": sum(p.numel() for p in net.parameters()),
        "nfe_forward": block.nfe_forward if block else None,
        "nfe_backward": block.nfe_backward if block else None,
        "activation_mb": round(meter.peak / 2**20, 2), "rss_growth_mb": round(rss_growth, 1),
        "cuda_peak_mb": None if cuda_peak is None else round(cuda_peak, 1),
        "step_ms": round(1e3 * statistics.median(times), 1),
    })


def run(kind: str, T: float, args) -> dict:
    ctx = mp.get_context("spawn")  # fresh process: its memory high-water mark is its own
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(kind, T, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def plot_horizon(rows: list[dict], path: str) -> None:
    """Peak activation memory and step time against T for both gradient methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for kind, label in (("direct", "backprop through RK4 (RK-Net)"), ("adjoint", "adjoint (ODE-Net)")):
        sel = [r for r in rows if r["model"] == kind]
        ax1.plot([r["T"] for r in sel], [r["activation_mb"] for r in sel], "o-", label=label)
        ax2.plot([r["T"] for r in sel], [r["step_ms"] for r in sel], "o-", label=label)
    ax1.set(xlabel="integration time T (NFE-F = 16 T)", ylabel="peak saved activations (MB)",
            title="training memory")
    ax2.set(xlabel="integration time T (NFE-F = 16 T)", ylabel="time per step (ms)", title="time")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["horizon", "models"], default="horizon")
    parser.add_argument("--horizons", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--depth", type=int, default=6, help="ResNet blocks")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--figure", default=None, help="horizon part: also plot memory vs T to this PNG")
    args = parser.parse_args()
    if args.part == "horizon":
        rows = [run(kind, T, args) for T in args.horizons for kind in ("direct", "adjoint")]
        keys = ["model", "T", "nfe_forward", "nfe_backward", "activation_mb", "rss_growth_mb",
                "cuda_peak_mb", "step_ms"]
    else:
        rows = [run(kind, 1.0, args) for kind in ("mlp", "resnet", "rknet", "odenet")]
        keys = ["model", "params", "nfe_forward", "nfe_backward", "activation_mb", "rss_growth_mb",
                "cuda_peak_mb", "step_ms"]
    print(table(rows, keys))
    if args.figure and args.part == "horizon":
        plot_horizon(rows, args.figure)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
