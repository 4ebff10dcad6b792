"""The DEQ training step next to the `torchdeq` package's: the same cell, weights, solver and backward.

Both sides are the DEQNet of configs/deq.yaml (conv cell with weight norm and group norm, width 32,
two stride-2 stem stages, 7x7 states): one copy keeps our `DEQLayer`, the other (`TorchDEQNet`) has
the same stem, cell and head modules (deep copies, so the same weights) around `torchdeq.get_deq`.
Matched: Anderson forward (memory 6, ridge 1e-4, no damping) with the same budget of cell
evaluations and the same relative-residual tolerance; implicit backward through a tensor hook on
one recorded cell call (torchdeq's `hook_ift`), solved by Anderson with the same budget and
tolerance; the weight-normed weights evaluated once per step on both sides. What differs, as far as
torchdeq's API allows no closer match, is listed in `DIFFERENCES`.

Measured per training step (forward solve + backward + Adam step on one fixed batch): median wall
and process-CPU time after warm-up (the sides alternate step by step, so both see the same load),
forward and backward solver evaluations, bytes saved for backward (saved_tensors_hooks) and, on
CUDA, the peak of `max_memory_allocated`. Before timing, one step from identical weights checks that
both reach the same fixed point and the same parameter gradients, at the benchmark's tolerances and
at tight ones. torchdeq is optional: without it this script says how to install it and exits 0.

    OMP_NUM_THREADS=1 python -m benchmarks.deq_torchdeq --batch 32 --steps 10
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from benchmarks.deq_memory import saved_bytes
from benchmarks.output import RESULTS, device_name
from benchmarks.training_child import timed

MISSING = "torchdeq is not installed (it is optional): pip install torchdeq"
NETWORK = dict(cell="conv", width=32, downsample=2, pool=7)  # configs/deq.yaml
SETTINGS = dict(max_iter=20, tol=1e-3, backward_max_iter=20, backward_tol=1e-4)  # configs/deq.yaml
ANDERSON = dict(m=6, lam=1e-4)  # the DEQ paper's memory and ridge; both sides mix with beta = tau = 1
#: The agreement check at convergence: float64, tight tolerances, and torchdeq's absolute ridge
#: lowered so that it does not stall its Anderson steps once residuals are small (ours is relative).
CONVERGED = dict(max_iter=100, tol=1e-10, backward_max_iter=100, backward_tol=1e-10)
CONVERGED_TORCHDEQ_LAM = 1e-12
DIFFERENCES = [
    "budget: our max_iter counts iterations after the first evaluation of f (max_iter + 1 evaluations), "
    "torchdeq's counts evaluations, so torchdeq gets max_iter + 1 (forward and backward alike)",
    "ridge: ours is lam times the mean squared residual of the mixed iterates (scale-free), torchdeq's is "
    "lam absolute; a singular mixing system falls back to a larger ridge / plain step in ours, raises in "
    "torchdeq",
    "stopping: ours freezes each sample once its relative residual is below tol (the batch runs until all "
    "are), torchdeq stops the whole batch when the largest residual is below tol and only checks from its "
    "third evaluation on",
    "returned state: ours keeps each sample's lowest-residual iterate z_k and outputs f(z_k); torchdeq keeps "
    "f(z_k) of the lowest-residual iterate and outputs f(f(z_k))",
    "relative residual: ||f(z) - z|| / (||f(z)|| + 1e-12) in ours, + 1e-9 in torchdeq",
]


def available() -> bool:
    return importlib.util.find_spec("torchdeq") is not None


def _counting(solver, counts: Counter, key: str):
    """`solver` with every evaluation of its function counted in counts[key]."""
    def run(func, x0, **kwargs):
        def counted(z):
            counts[key] += 1
            return func(z)
        out = solver(counted, x0, **kwargs)
        TORCHDEQ_INFO[key] = out[2]
        return out
    return run


TORCHDEQ_NFE: Counter = Counter()  # evaluations by torchdeq's forward and backward solvers
TORCHDEQ_INFO: dict = {}  # their last SolverStat


class TorchDEQNet(nn.Module):
    """A DEQNet's stem, cell and head (copied, same weights) with torchdeq's DEQ in place of DEQLayer."""

    def __init__(self, net: nn.Module, max_iter: int, tol: float, backward_max_iter: int,
                 backward_tol: float, lam: float = ANDERSON["lam"]):
        import torchdeq

        super().__init__()
        self.stem, self.cell, self.head = (copy.deepcopy(m) for m in (net.stem, net.deq.cell, net.head))
        self.solver_kwargs = dict(m=ANDERSON["m"], lam=lam, tau=1.0)
        anderson = torchdeq.get_solver("anderson")
        # get_deq looks the solvers up once, so each instance keeps its own counted pair
        torchdeq.register_solver("counted_forward", _counting(anderson, TORCHDEQ_NFE, "forward"))
        torchdeq.register_solver("counted_backward", _counting(functools.partial(anderson, lam=lam), TORCHDEQ_NFE,
                                                               "backward"))
        self.deq = torchdeq.get_deq(core="sliced", f_solver="counted_forward", b_solver="counted_backward",
                                    f_max_iter=max_iter + 1, b_max_iter=backward_max_iter + 1, f_tol=tol,
                                    b_tol=backward_tol, f_stop_mode="rel", b_stop_mode="rel", ift=True,
                                    hook_ift=True)
        self.last: Tensor | None = None  # the equilibrium state of the last call

    def forward(self, x: Tensor) -> Tensor:
        from lit_papers.deq.layer import warm_parametrizations

        injection = self.stem(x)
        with parametrize.cached():  # weight norm once per step, as DEQLayer does
            warm_parametrizations(self.cell)
            states, _ = self.deq(lambda z: self.cell(z, injection), self.cell.init_state(injection),
                                 solver_kwargs=self.solver_kwargs)
        self.last = states[-1]
        return self.head(self.last)


def build_pair(settings: dict, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0,
               lam: float = ANDERSON["lam"]) -> tuple[nn.Module, TorchDEQNet]:
    """(our DEQNet, TorchDEQNet) with identical weights and matched solver settings (`lam`: torchdeq's ridge)."""
    from lit_papers.deq import DEQNet

    torch.manual_seed(seed)
    ours = DEQNet((1, 28, 28), 10, solver="anderson", backward="ift", backward_solver="anderson",
                  solver_kwargs=dict(ANDERSON, beta=1.0), backward_kwargs=dict(ANDERSON), **NETWORK,
                  **settings)
    theirs = TorchDEQNet(ours, lam=lam, **settings)
    return ours.to(device, dtype).train(), theirs.to(device, dtype).train()


def _record_info(net: nn.Module) -> dict:
    """Keeps the (z, DEQInfo) of the DEQ layer's last call in the returned dict."""
    seen: dict = {}
    net.deq.register_forward_hook(lambda module, args, out: seen.update(z=out[0], info=out[1]))
    return seen


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def residuals(info, name: str) -> dict:
    """Largest relative residual over the batch reached by the forward and the backward solve of
    the last step: our DEQInfo, or torchdeq's solver statistics."""
    if name == "ours":
        return {"forward": float(info.forward.rel_residual.max()), "backward": float(info.backward.rel_residual.max())}
    return {key: float(TORCHDEQ_INFO[key]["rel_lowest"].max()) for key in ("forward", "backward")}


def agreement(settings: dict, x: Tensor, y: Tensor, lam: float = ANDERSON["lam"]) -> dict:
    """One forward/backward of both sides from the same weights: relative differences of the
    equilibrium state, the logits and (largest over parameters) the gradients."""
    ours, theirs = build_pair(settings, x.device, x.dtype, lam=lam)
    seen = _record_info(ours)
    logits = {}
    for name, net in (("ours", ours), ("torchdeq", theirs)):
        logits[name] = net(x)
        F.cross_entropy(logits[name], y).backward()
    grads = {name.removeprefix("deq."): p.grad for name, p in ours.named_parameters()}
    grad_diff = {name: _rel(grads[name], p.grad) for name, p in theirs.named_parameters()}
    worst = max(grad_diff, key=grad_diff.get)
    return {"settings": settings, "dtype": str(x.dtype).removeprefix("torch."), "torchdeq_lam": lam,
            "state": _rel(seen["z"].detach(), theirs.last.detach()),
            "logits": _rel(logits["ours"].detach(), logits["torchdeq"].detach()),
            "grad_max": grad_diff[worst], "grad_max_param": worst,
            "residuals": {"ours": residuals(seen["info"], "ours"), "torchdeq": residuals(None, "torchdeq")}}


def _peak_mib(step, device: torch.device) -> float | None:
    """Peak CUDA memory of one more step above what was allocated before it (None on CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def compare(x: Tensor, y: Tensor, steps: int = 10, warmup: int = 2, check: bool = True) -> dict:
    """Times `steps` Adam steps of both sides on the batch (x, y) after `warmup`, alternating sides."""
    device = x.device
    report = {"batch": len(x), "steps": steps, "warmup": warmup, "network": NETWORK, "anderson": ANDERSON,
              "settings": SETTINGS, "differences": DIFFERENCES}
    if check:
        report["agreement"] = {"benchmark": agreement(SETTINGS, x, y),
                               "converged": agreement(CONVERGED, x.double(), y, lam=CONVERGED_TORCHDEQ_LAM)}
    ours, theirs = build_pair(SETTINGS, device)
    seen = _record_info(ours)
    sides = {"ours": ours, "torchdeq": theirs}
    stats = {name: {"wall": [], "cpu": [], "forward_nfe": [], "backward_nfe": [], "forward_residual": [],
                    "backward_residual": []} for name in sides}
    step_fns = {}
    for name, net in sides.items():
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(net=net, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        step_fns[name] = step
    for i in range(warmup + steps):
        for name, step in sorted(step_fns.items(), reverse=bool(i % 2)):  # who goes first alternates too
            TORCHDEQ_NFE.clear()
            (wall,), (cpu,) = timed(step, 1, device)
            if i < warmup:
                continue
            s = stats[name]
            s["wall"].append(wall)
            s["cpu"].append(cpu)
            info = seen["info"]
            nfe = ((info.forward.nfe, info.backward.nfe) if name == "ours"
                   else (TORCHDEQ_NFE["forward"], TORCHDEQ_NFE["backward"]))
            s["forward_nfe"].append(nfe[0])
            s["backward_nfe"].append(nfe[1])
            for key, value in residuals(info, name).items():
                s[f"{key}_residual"].append(value)
    sides_out = {}
    for name, net in sides.items():
        s = stats[name]
        sides_out[name] = {
            "step_ms": 1e3 * statistics.median(s["wall"]), "step_cpu_ms": 1e3 * statistics.median(s["cpu"]),
            **{key: statistics.median(s[key]) for key in ("forward_nfe", "backward_nfe", "forward_residual",
                                                            "backward_residual")},
            "saved_mib": saved_bytes(net, x) / 2**20, "peak_mib": _peak_mib(step_fns[name], device)}
    report["sides"] = sides_out
    report["ratios"] = {key: sides_out["ours"][key] / sides_out["torchdeq"][key]
                        for key in ("step_ms", "step_cpu_ms", "forward_nfe", "backward_nfe", "saved_mib", "peak_mib")
                        if sides_out["torchdeq"][key]}
    return report


ROWS = (("step_ms", "time per step (wall, median)", "ms", 1.0),
        ("step_cpu_ms", "time per step (process CPU)", "ms", 1.0),
        ("forward_nfe", "forward solver evaluations of f", "", None),
        ("backward_nfe", "backward solver VJPs", "", None),
        ("forward_residual", "forward relative residual reached (max over batch)", "", None),
        ("backward_residual", "backward relative residual reached (max over batch)", "", None),
        ("saved_mib", "saved for backward", "MiB", 1.0), ("peak_mib", "peak CUDA memory of a step", "MiB", 1.0))


def markdown(report: dict) -> str:
    s, r = report["sides"], report["ratios"]
    lines = [f"# DEQ step vs torchdeq on {report['device_name']}", "",
             f"torch {report['torch']}, torchdeq {report['torchdeq']}, {report['when']}, "
             f"{report['threads']} thread(s), command: `{report['command']}`", "",
             f"DEQNet of configs/deq.yaml ({report['network']}), batch {report['batch']} MNIST-shaped synthetic, "
             f"Adam; settings {report['settings']}, Anderson {report['anderson']}. Medians of {report['steps']} "
             f"steps after {report['warmup']} warm-up steps, the two sides alternating (each goes first every other "
             "round).", "",
             "| per training step | ours (DEQLayer) | torchdeq | ours / torchdeq | target |",
             "| --- | --- | --- | --- | --- |"]
    for key, what, unit, target in ROWS:
        if s["ours"][key] is None:
            continue
        ratio = r.get(key)
        met = "" if target is None or ratio is None else (" met" if ratio <= target else " **not met**")
        lines.append(f"| {what} | {s['ours'][key]:.4g} {unit} | {s['torchdeq'][key]:.4g} {unit} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {'' if target is None else f'<= {target}x'}{met} |")
    lines += ["", "Agreement: one step of both sides from identical weights; relative differences ours vs torchdeq, "
              "and the largest relative residual each side's forward / backward solve reached:", "",
              "| check | equilibrium state | logits | largest parameter gradient | residuals ours "
              "| residuals torchdeq |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, a in report.get("agreement", {}).items():
        res = {side: f"{r['forward']:.1e} / {r['backward']:.1e}" for side, r in a["residuals"].items()}
        lines.append(f"| {name}: {a['dtype']}, {a['settings']}, torchdeq lam {a['torchdeq_lam']:g} | {a['state']:.1e} "
                     f"| {a['logits']:.1e} | {a['grad_max']:.1e} ({a['grad_max_param']}) | {res['ours']} "
                     f"| {res['torchdeq']} |")
    lines += ["", "What differs:", ""] + [f"- {d}" for d in report["differences"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side (medians)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write results/")
    args = ap.parse_args(argv)
    if not available():
        print(MISSING)
        return None
    import torchdeq  # noqa: F401
    from importlib.metadata import version

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    report = {"device_name": device_name(device), "torch": torch.__version__, "torchdeq": version("torchdeq"),
              "python": platform.python_version(), "threads": torch.get_num_threads(),
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.deq_torchdeq " + " ".join(argv if argv is not None else sys.argv[1:]),
              **compare(x, y, args.steps, args.warmup)}
    text = markdown(report)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = f"{report['device_name']}_torchdeq"
        (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
        (RESULTS / f"{stem}.md").write_text(text)
    return report


if __name__ == "__main__":
    main()
