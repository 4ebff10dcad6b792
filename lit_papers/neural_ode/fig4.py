"""Chen et al. 2018, Fig. 4: the planar NF with K layers against the planar CNF with M units, by reverse KL.

    python -m lit_papers.neural_ode.fig4 [--targets u1 u3] [--widths 2 8 32] [--epochs 15] [--jobs 2]

Every (target, flow, width) is one ordinary run of ``configs/density_matching.yaml`` through the CLI
(``runs/fig4/<target>_<flow>_<width>/v0``; finished runs are reused, so a rerun only draws). The script
then loads each ``last.ckpt``, draws one row per target (target, NF K = ..., CNF M = ...) and prints the
table of final KL(q || p) in nats (the last validation estimate from ``n_eval`` samples, +- its standard error).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from lit_papers.core.load_module import load_module

from .density_figures import draw_density, grid_densities
from .density_matching import DensityMatchingModule

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "density_matching.yaml"
FLOW_LABELS = {"planar_nf": "NF K", "planar_cnf": "CNF M"}


def run_folder(root: Path, target: str, flow: str, width: int) -> Path:
    return root / f"{target}_{flow}_{width}" / "v0"


def train(root: Path, target: str, flow: str, width: int, epochs: int) -> Path:
    """One CLI run (skipped when its summary says finished); returns its run folder."""
    folder = run_folder(root, target, flow, width)
    summary = folder / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("status") == "finished":
        return folder
    args = [sys.executable, "-m", "lit_papers", "fit", "--config", str(CONFIG), f"--run_root={root}",
            f"--experiment={target}_{flow}_{width}", "--run_version=v0", f"--model.flow={flow}",
            f"--model.width={width}", f"--model.target={target}", f"--trainer.max_epochs={epochs}",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false"]
    if (folder / "checkpoints" / "last.ckpt").exists():
        args.append("--ckpt_path=last")  # an interrupted sweep continues its runs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run {target} {flow} {width} failed:\n{done.stderr[-2000:]}")
    return folder


def result(folder: Path) -> dict:
    s = json.loads((folder / "summary.json").read_text())
    return {"kl": s["final"]["val/kl"], "se": s["final"]["val/kl_se"], "wall_s": s["wall_time_s"]}


def figure(root: Path, targets, widths, grid_size: int):
    flows = list(FLOW_LABELS)
    cols = 1 + len(flows) * len(widths)
    fig, axes = plt.subplots(len(targets), cols, figsize=(1.9 * cols, 2.0 * len(targets)), squeeze=False)
    for r, target in enumerate(targets):
        side, p, _ = grid_densities(target, None, grid_size)
        draw_density(axes[r, 0], side, p, "target" if r == 0 else "")
        axes[r, 0].set_ylabel(target)
        for c, (flow, width) in enumerate(((f, w) for f in flows for w in widths), start=1):
            folder = run_folder(root, target, flow, width)
            model = load_module(DensityMatchingModule, folder / "checkpoints" / "last.ckpt",
                                map_location="cpu").eval()
            _, _, q = grid_densities(target, model.flow.log_prob, grid_size)
            draw_density(axes[r, c], side, q, f"{FLOW_LABELS[flow]}={width}" if r == 0 else "")
            axes[r, c].set_xlabel(f"KL {result(folder)['kl']:.3f}", fontsize=8)
    fig.tight_layout()
    return fig


def table(root: Path, targets, widths) -> str:
    lines = ["| target | flow | " + " | ".join(f"width {w}" for w in widths) + " |",
             "| --- | --- |" + " --- |" * len(widths)]
    for target in targets:
        for flow, label in FLOW_LABELS.items():
            cells = []
            for w in widths:
                r = result(run_folder(root, target, flow, w))
                cells.append(f"{r['kl']:.3f} +- {r['se']:.3f} ({r['wall_s']:.0f} s)")
            lines.append(f"| {target} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["u1", "u3"])
    ap.add_argument("--widths", nargs="+", type=int, default=[2, 8, 32])
    ap.add_argument("--epochs", type=int, default=15, help="epochs of 100 steps per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--run_root", type=Path, default=Path("runs/fig4"))
    ap.add_argument("--out", type=Path, default=Path("docs/figures/neural_ode_fig4.png"))
    ap.add_argument("--grid_size", type=int, default=120)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = args.run_root.resolve()
    todo = [(t, f, w) for t in args.targets for f in FLOW_LABELS for w in args.widths]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda job: train(root, *job, args.epochs), todo))
    fig = figure(root, args.targets, args.widths, args.grid_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    text = table(root, args.targets, args.widths)
    (root / "fig4_table.md").write_text(text + "\n")
    print(text)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
