"""`MemberRecords`: what a population remembers of each member between epochs, and its outputs.

Per member: the last logged value of every metric per stage, the best validation epoch, and the
validation accuracy of every epoch. They live outside the weights, so they travel in checkpoints
(`state_dict`), and they become `members.json` and the `members_val_acc` figure of the run folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch


class MemberRecords:
    """Per-member records of a population of K members."""

    def __init__(self) -> None:
        self.best: dict[int, dict] = {}  # member -> its best validation epoch
        self.last: dict[str, dict[str, list[float]]] = {}  # stage -> metric -> per-member value
        self.history: list[tuple[int, list[float]]] = []  # (epoch, per-member val acc)

    def update(self, stage: str, values: dict[str, torch.Tensor], epoch: int, step: int,
               validating: bool) -> None:
        """Records one stage's epoch values, (K,) each; `validating`: a real validation epoch (not
        Lightning's sanity check), which also updates the history and the best epochs."""
        record = {name: [float(v) for v in t.detach().cpu()] for name, t in values.items()}
        self.last[stage] = record
        if stage == "val" and validating:
            self.history.append((epoch, record["acc"]))
            for k, acc in enumerate(record["acc"]):
                if acc > self.best.get(k, {}).get("val/acc", -1.0):
                    self.best[k] = {"val/acc": acc, "val/loss": record["loss"][k], "epoch": epoch, "step": step}

    def state_dict(self) -> dict:
        return {"best": self.best, "last": self.last, "history": self.history}

    def load_state_dict(self, records: dict) -> None:
        self.best = {int(k): v for k, v in records.get("best", {}).items()}
        self.last = dict(records.get("last", {}))
        self.history = [(int(e), list(a)) for e, a in records.get("history", [])]

    def members(self, seeds: Sequence[int], labels: Optional[tuple[str, Sequence[float]]] = None) -> list[dict]:
        """One record per member: seed, last logged metrics per stage, best validation epoch;
        `labels` = (corruption name, per-member probability) when members differ by their labels."""
        out = []
        for k, seed in enumerate(seeds):
            final = {f"{stage}/{name}": vals[k] for stage, rec in self.last.items() for name, vals in rec.items()}
            record = {"member": k, "seed": seed, "final": final, "best": self.best.get(k, {}),
                      "val_acc_by_epoch": {str(e): accs[k] for e, accs in self.history}}
            if labels is not None:
                record["labels"] = {"corruption": labels[0], "prob": labels[1][k]}
            out.append(record)
        return out


def write_json(folder: Path, name: str, data: dict) -> str:
    """Writes `folder/name` atomically (a temporary file renamed over it)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(folder / name)
    return str(folder / name)


def members_figure(history: Sequence[tuple[int, Sequence[float]]], labels: Sequence[str]):
    """Validation accuracy of every member (legend `labels`) against the epoch, with the mean."""
    import matplotlib.pyplot as plt

    epochs = [e for e, _ in history]
    accs = torch.tensor([list(a) for _, a in history])  # (epochs, K)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for k, label in enumerate(labels):
        ax.plot(epochs, accs[:, k], alpha=0.6, lw=1, label=label if len(labels) <= 8 else None)
    ax.plot(epochs, accs.mean(1), color="black", lw=2, label="member mean")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.set_title(f"population of {len(labels)} (one process)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
